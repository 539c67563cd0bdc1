"""Measuring a guest's dirty rate gives an answer or says why there is none, within a bound.

The domain here stands in for libvirt's ``virDomain``: tests/integration/test_dirtyrate.py
measures real guests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from evac.dirtyrate import (
    STATS_DIRTYRATE,
    DirtyRate,
    DirtyRateMeasurement,
    DirtyRateStatus,
    measure_dirty_rate,
    read_dirty_rate,
)

MiB = 2**20
MEASURING = {"dirtyrate.calc_status": 1, "dirtyrate.calc_period": 1}
MEASURED = {"dirtyrate.calc_status": 2, "dirtyrate.calc_period": 1, "dirtyrate.megabytes_per_second": 44}


class LibvirtError(Exception):
    """Shaped like ``libvirt.libvirtError``: what the module recognises libvirt's errors by."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def get_error_code(self) -> int:
        return self.code


class Domain:
    """A virDomain whose statistics read ``answers`` in turn (the last one repeats)."""

    def __init__(self, *answers: dict[str, Any], start_error: Exception | None = None) -> None:
        self.answers = list(answers)
        self.start_error = start_error
        self.started: list[tuple[int, int]] = []
        self.asked: list[int] = []

    def startDirtyRateCalc(self, seconds: int, flags: int = 0) -> None:
        self.started.append((seconds, flags))
        if self.start_error:
            raise self.start_error

    def connect(self) -> Domain:
        return self

    def domainListGetStats(
        self, doms: Sequence[Any], stats: int = 0, flags: int = 0
    ) -> list[tuple[Any, dict[str, Any]]]:
        assert list(doms) == [self]
        self.asked.append(stats)
        return [(self, self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])]


class Clock:
    """Time that moves only when read: each reading is ``step`` seconds after the last."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_finished_measurement_reads_in_bytes_per_second() -> None:
    assert read_dirty_rate(MEASURED) == DirtyRate(DirtyRateStatus.MEASURED, 44 * MiB, 1.0)


def test_a_measurement_under_way_has_no_answer_yet() -> None:
    assert read_dirty_rate(MEASURING) is None


def test_statistics_without_a_dirty_rate_mean_libvirt_cannot_measure() -> None:
    answer = read_dirty_rate({})
    assert answer is not None and answer.status is DirtyRateStatus.UNSUPPORTED


def test_the_wait_lasts_until_qemu_has_measured() -> None:
    domain = Domain(MEASURING, MEASURING, MEASURED)
    assert measure_dirty_rate(domain, every=0).bytes_per_second == 44 * MiB
    assert domain.asked == [STATS_DIRTYRATE] * 3


def test_qemu_samples_pages_for_at_least_one_whole_second() -> None:
    domain = Domain(MEASURED)
    measure_dirty_rate(domain, seconds=0, every=0)
    assert domain.started == [(1, 0)]  # flags 0: page sampling, the one mode that is safe under TCG


def test_a_qemu_that_cannot_measure_is_an_answer_not_an_error() -> None:
    domain = Domain(MEASURED, start_error=LibvirtError(84, "Operation not supported: dirty-ring"))
    assert measure_dirty_rate(domain, every=0) == DirtyRate(
        DirtyRateStatus.UNSUPPORTED, reason="Operation not supported: dirty-ring"
    )


def test_a_qemu_without_the_command_cannot_measure() -> None:
    error = LibvirtError(1, "internal error: The command calc-dirty-rate has not been found")
    assert measure_dirty_rate(Domain(MEASURED, start_error=error), every=0).status is DirtyRateStatus.UNSUPPORTED


def test_a_libvirt_python_without_the_call_cannot_measure() -> None:
    class Old:
        def connect(self) -> Domain:
            raise AssertionError("never asked")

    answer = measure_dirty_rate(Old(), every=0)  # type: ignore[arg-type]
    assert answer.status is DirtyRateStatus.UNSUPPORTED and "7.2" in answer.reason


def test_a_guest_that_stopped_is_told_apart() -> None:
    error = LibvirtError(55, "Requested operation is not valid: domain is not running")
    assert measure_dirty_rate(Domain(MEASURED, start_error=error), every=0).status is DirtyRateStatus.NOT_RUNNING


def test_any_other_libvirt_error_is_a_failure_saying_what_was_being_done() -> None:
    error = LibvirtError(38, "Unable to read from monitor: Connection reset by peer")
    answer = measure_dirty_rate(Domain(MEASURED, start_error=error), every=0)
    assert answer == DirtyRate(
        DirtyRateStatus.FAILED, reason="starting: Unable to read from monitor: Connection reset by peer"
    )


def test_a_bug_is_raised_not_turned_into_an_answer() -> None:
    with pytest.raises(ZeroDivisionError):
        measure_dirty_rate(Domain(MEASURED, start_error=ZeroDivisionError()), every=0)


def test_no_answer_within_the_period_and_grace_is_a_timeout() -> None:
    measurement = DirtyRateMeasurement(Domain(MEASURING), seconds=1, grace=2, clock=Clock(step=0.5))
    answer = measurement.wait(every=0)
    assert answer.status is DirtyRateStatus.TIMED_OUT


def test_a_cancel_stops_the_wait_at_once() -> None:
    cancel = threading.Event()
    cancel.set()
    assert measure_dirty_rate(Domain(MEASURING), cancel=cancel).status is DirtyRateStatus.CANCELLED


def test_a_measurement_started_before_a_migration_is_read_while_it_runs() -> None:
    measurement = DirtyRateMeasurement(Domain(MEASURING, MEASURED))
    assert measurement.poll() is None
    assert measurement.poll() == measurement.poll() == DirtyRate(DirtyRateStatus.MEASURED, 44 * MiB, 1.0)


def test_an_answer_says_what_was_measured_or_why_nothing_was() -> None:
    assert str(DirtyRate(DirtyRateStatus.MEASURED, 44 * MiB, 1.0)) == "dirty rate 44 MiB/s (measured over 1 s)"
    assert str(DirtyRate(DirtyRateStatus.UNSUPPORTED, reason="no")) == "no dirty rate (unsupported: no)"
