"""The YAML loader (``evac.yamldoc``): any text or file bytes load, or fail with one line."""

from __future__ import annotations

from hypothesis import Phase, example, given, settings

from tests.fuzz.cases import TARGETS, Driver, Outcome, ci_settings, outcome

TARGET = TARGETS["yaml"]


@ci_settings(TARGET)
@given(case=TARGET.strategy)
def test_any_yaml_text_or_file_loads_or_fails_with_one_line(drive: Driver, case: str | bytes) -> None:
    assert outcome(drive, case) in Outcome


@settings(phases=[Phase.explicit], database=None)
@example(case="!!timestamp")
@example(case=b"when: !!timestamp 2024-13\n")
@example(case="a: !!int \n")
@example(case="a: !!float \n")
@given(case=TARGET.strategy)
def test_a_tag_python_cannot_build_from_its_value_fails_with_one_line(drive: Driver, case: str | bytes) -> None:
    assert drive(case) is Outcome.CLEAR
