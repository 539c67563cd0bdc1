"""The runbook loader and validator: any file loads and checks, or fails with one-line problems."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz.cases import TARGETS, Driver, Outcome, ci_settings, outcome

TARGET = TARGETS["runbook"]


@ci_settings(TARGET)
@given(case=TARGET.strategy)
def test_any_runbook_file_loads_and_validates_or_fails_with_one_line(drive: Driver, case: bytes) -> None:
    assert outcome(drive, case) in Outcome
