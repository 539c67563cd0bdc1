"""``evac.yaml`` with plugins' sections: any file loads, or fails with one line."""

from __future__ import annotations

from hypothesis import example, given

from tests.fuzz.cases import TARGETS, Driver, Outcome, ci_settings, outcome

TARGET = TARGETS["evac.yaml"]


@ci_settings(TARGET)
@example(case=b"slack: [0]\n")  # a section that is no mapping
@example(case=b"slack: text\n")
@example(case=b'logging: {"\\x07\\n": 1}\n')  # an unknown key that is no printable line
@given(case=TARGET.strategy)
def test_any_evac_yaml_loads_or_fails_with_one_line(drive: Driver, case: bytes) -> None:
    assert outcome(drive, case) in Outcome
