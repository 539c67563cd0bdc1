"""``evac runbook validate FILE``: exit 0, or 1/2 with each stderr line one problem, never a traceback."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz.cases import TARGETS, Driver, Outcome, ci_settings, outcome

TARGET = TARGETS["runbook validate (CLI)"]


@ci_settings(TARGET)
@given(case=TARGET.strategy)
def test_runbook_validate_exits_0_or_with_one_line_per_problem(drive: Driver, case: bytes) -> None:
    assert outcome(drive, case) in Outcome
