"""How fast a running guest dirties its memory, measured by QEMU outside any migration.

QEMU reports a migration's dirty rate only after a whole pre-copy pass, so a policy that
meets a guest for the first time would spend that pass finding out what it could know
about a second in. libvirt's ``startDirtyRateCalc`` asks QEMU to measure for a whole
number of seconds; the answer is read back from the domain's ``dirtyrate.*`` statistics.

It can run up front (:func:`measure_dirty_rate`, which waits for the answer), or alongside
the migration's first pass: start a :class:`DirtyRateMeasurement` just before the
migration and :meth:`~DirtyRateMeasurement.poll` it with the job's samples. The start must
come first: libvirt will not start a measurement while the migration job holds the guest
(it waits up to 30 s for it), but reading the answer is allowed while it runs.

Only QEMU's page-sampling mode is used. It hashes a few hundred sampled pages per GiB at the
start and the end of the period, so it costs the guest next to nothing, and it counts the
*distinct* pages written in the period: a guest rewriting 48 MiB flat out reads up to
48 MiB/s over 1 s and half that over 2 s. That is what pre-copy fights (a pass re-sends the
pages written since the last one). The other modes are unusable here: the dirty-bitmap mode
crashed QEMU 7.2 under TCG (a segfault: the guest was lost), and the dirty-ring mode needs
KVM's dirty ring. QEMU does not sample RAM blocks under 128 MiB, so a smaller guest reads 0.

libvirt is not imported (the hypervisor adapter is its one door): the domain handed in is
a ``virDomain`` used through the two calls of :class:`MeasurableDomain`, and libvirt's
errors are told apart by their codes, so a libvirt, QEMU or guest that cannot measure gives
a typed answer saying why, never an exception.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

MiB = 2**20
SMALLEST_SAMPLED_MIB = 128  # QEMU skips smaller RAM blocks when it samples pages

# Values of libvirt's enums (virDomainStatsTypes, virDomainDirtyRateStatus, virErrorNumber).
STATS_DIRTYRATE = 512
CALC_MEASURED = 2
PAGE_SAMPLING = 0
UNSUPPORTED_CODES = {3, 74, 84}  # NO_SUPPORT, ARGUMENT_UNSUPPORTED, OPERATION_UNSUPPORTED
NOT_RUNNING_CODES = {42, 55}  # NO_DOMAIN, OPERATION_INVALID
MISSING_COMMAND = ("has not been found", "CommandNotFound")  # QEMU older than 5.2


class DirtyRateStatus(StrEnum):
    MEASURED = "measured"
    UNSUPPORTED = "unsupported"  # this libvirt or QEMU cannot measure
    NOT_RUNNING = "not_running"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    FAILED = "failed"  # any other error, told in ``reason``


@dataclass(frozen=True)
class DirtyRate:
    """One measurement, or why there is none: a policy then plans without it."""

    status: DirtyRateStatus
    bytes_per_second: float = 0.0
    period: float = 0.0  # seconds QEMU measured over
    reason: str = ""

    @property
    def measured(self) -> bool:
        return self.status is DirtyRateStatus.MEASURED

    def __str__(self) -> str:
        if self.measured:
            return f"dirty rate {self.bytes_per_second / MiB:.0f} MiB/s (measured over {self.period:.0f} s)"
        return f"no dirty rate ({self.status}: {self.reason})"


class StatsConnection(Protocol):
    def domainListGetStats(self, doms: Sequence[Any], stats: int = 0, flags: int = 0) -> Any: ...


class MeasurableDomain(Protocol):
    """What of a libvirt ``virDomain`` a measurement uses."""

    def startDirtyRateCalc(self, seconds: int, flags: int = 0) -> Any: ...

    def connect(self) -> StatsConnection: ...


class DirtyRateMeasurement:
    """One measurement under way: started when made, read until it has an answer.

    The answer comes once QEMU has measured for ``seconds`` (a whole number, at least 1);
    after ``seconds + grace`` without one, the answer is ``TIMED_OUT``.
    """

    def __init__(
        self,
        domain: MeasurableDomain,
        seconds: int = 1,
        grace: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domain = domain
        self.seconds = max(1, int(seconds))
        self.clock = clock
        self.deadline = clock() + self.seconds + grace
        self.answer: DirtyRate | None = None
        if not hasattr(domain, "startDirtyRateCalc"):
            self.answer = DirtyRate(DirtyRateStatus.UNSUPPORTED, reason="libvirt-python before 7.2 cannot measure")
        else:
            self.answer = _call(lambda: domain.startDirtyRateCalc(self.seconds, PAGE_SAMPLING), "starting")

    def poll(self) -> DirtyRate | None:
        """The answer, or None while QEMU still measures (one cheap statistics call)."""
        if self.answer is not None:
            return self.answer
        stats: dict[str, Any] = {}
        self.answer = _call(lambda: stats.update(_dirty_rate_stats(self.domain)), "reading the answer")
        if self.answer is None:
            self.answer = read_dirty_rate(stats)
        if self.answer is None and self.clock() > self.deadline:
            self.answer = DirtyRate(DirtyRateStatus.TIMED_OUT, reason=f"no answer within {self.seconds} s and grace")
        return self.answer

    def wait(self, cancel: threading.Event | None = None, every: float = 0.05) -> DirtyRate:
        """Poll every ``every`` seconds until the answer; ``cancel`` stops waiting at once
        (QEMU finishes on its own: a measurement cannot be stopped, and costs nothing)."""
        cancel = cancel or threading.Event()
        while (answer := self.poll()) is None:
            if cancel.wait(every):
                return DirtyRate(DirtyRateStatus.CANCELLED, reason="cancelled while measuring")
        return answer


def measure_dirty_rate(
    domain: MeasurableDomain,
    seconds: int = 1,
    cancel: threading.Event | None = None,
    grace: float = 2.0,
    every: float = 0.05,
) -> DirtyRate:
    """Measure now and wait for the answer: about ``seconds`` s, at most ``seconds + grace``."""
    return DirtyRateMeasurement(domain, seconds, grace).wait(cancel, every)


def read_dirty_rate(stats: Mapping[str, Any]) -> DirtyRate | None:
    """The answer in a domain's ``dirtyrate.*`` statistics; None while QEMU still measures."""
    if "dirtyrate.calc_status" not in stats:
        return DirtyRate(DirtyRateStatus.UNSUPPORTED, reason="libvirt reports no dirty-rate statistics")
    if int(stats["dirtyrate.calc_status"]) != CALC_MEASURED:
        return None
    if "dirtyrate.megabytes_per_second" not in stats:
        return DirtyRate(DirtyRateStatus.FAILED, reason="the measurement ended without a rate")
    return DirtyRate(
        DirtyRateStatus.MEASURED,
        bytes_per_second=float(stats["dirtyrate.megabytes_per_second"]) * MiB,  # QEMU's "MB" are MiB
        period=float(stats.get("dirtyrate.calc_period", 0)),
    )


def _dirty_rate_stats(domain: MeasurableDomain) -> dict[str, Any]:
    records = domain.connect().domainListGetStats([domain], STATS_DIRTYRATE)
    return dict(records[0][1]) if records else {}


def _call(call: Callable[[], object], doing: str) -> DirtyRate | None:
    """Run one libvirt call: None when it worked, else its error as the answer. libvirt's
    errors are the exceptions with an error code; any other exception is a bug, raised."""
    try:
        call()
    except Exception as exc:
        code = getattr(exc, "get_error_code", None)
        if code is None:
            raise
        return _failure(int(code() or 0), str(exc), doing)
    return None


def _failure(code: int, message: str, doing: str) -> DirtyRate:
    if code in UNSUPPORTED_CODES or any(sign in message for sign in MISSING_COMMAND):
        return DirtyRate(DirtyRateStatus.UNSUPPORTED, reason=message)
    if code in NOT_RUNNING_CODES:
        return DirtyRate(DirtyRateStatus.NOT_RUNNING, reason=message)
    return DirtyRate(DirtyRateStatus.FAILED, reason=f"{doing}: {message}")
