"""``hosts.yaml``: any file loads (fence methods checked), or fails with one line."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz.cases import TARGETS, Driver, Outcome, ci_settings, outcome

TARGET = TARGETS["inventory"]


@ci_settings(TARGET)
@given(case=TARGET.strategy)
def test_any_inventory_loads_or_fails_with_one_line(drive: Driver, case: bytes) -> None:
    assert outcome(drive, case) in Outcome
