"""The storm brake read again right before a fence: which failovers an engaged brake stops."""

from __future__ import annotations

from evac.journal import BrakeState
from evac.stormbrake import holds_back

STARTED = 1_000_000.0  # the failover job's creation, wall clock


def test_no_brake_holds_back_no_failover() -> None:
    assert not holds_back(None, STARTED)


def test_a_brake_engaged_after_the_failover_started_holds_it_back() -> None:
    assert holds_back(BrakeState("2 of 3 hosts down", STARTED + 0.8), STARTED)


def test_a_brake_engaged_a_moment_before_the_failover_was_created_holds_it_back() -> None:
    assert holds_back(BrakeState("2 of 3 hosts down", STARTED - 0.2), STARTED)


def test_a_failover_an_operator_started_long_after_the_brake_engaged_goes_ahead() -> None:
    assert not holds_back(BrakeState("2 of 3 hosts down", STARTED - 600), STARTED)
