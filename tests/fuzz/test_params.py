"""``-p KEY=VALUE`` pairs: parsed and bound to a runbook's params, or one line saying which is wrong."""

from __future__ import annotations

from hypothesis import example, given

from tests.fuzz.cases import TARGETS, Driver, Outcome, ci_settings, outcome

TARGET = TARGETS["params"]


@ci_settings(TARGET)
@example(case=["reason=a", "reason\nb=c", "reason\nb=d"])  # a key given twice, with a newline in it
@example(case=["no\nsuch=1"])  # an unknown key with a newline in it
@given(case=TARGET.strategy)
def test_any_param_pairs_bind_or_fail_with_one_line(drive: Driver, case: list[str]) -> None:
    assert outcome(drive, case) in Outcome
