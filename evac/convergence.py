"""The vocabulary of migration convergence, shared by the migrate action and policy plugins.

A policy sees samples of the migration job's statistics and answers with the next
escalation, if any. Which escalations exist is bounded by what libvirt can change while
a migration runs: max downtime, bandwidth, the switch to post-copy (enabled at start),
and abort. Compression and auto-converge must be chosen before the start.

A policy that also implements :class:`MeasuringPolicy` is handed the guest's dirty rate,
measured by QEMU (:mod:`evac.dirtyrate`) from just before the start, so it can choose a
strategy during the first pass instead of after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from .dirtyrate import DirtyRate
from .model import Guest


class Strategy(StrEnum):
    """What a guest's migration needed (kept in the journal as ``convergence:<guest>``),
    or what a policy plans for it."""

    PLAIN = "plain"  # pre-copy converged, perhaps after a longer allowed pause
    POSTCOPY = "postcopy"


@dataclass(frozen=True)
class Sample:
    elapsed: float  # seconds since the migration started
    processed: int  # bytes of memory sent so far
    remaining: int  # bytes of memory still to send in this pass
    total: int
    dirty_rate: float  # bytes per second the guest dirties
    bandwidth: float  # bytes per second actually sent
    iteration: int  # pre-copy pass number


@dataclass(frozen=True)
class Escalation:
    kind: str  # max_downtime, bandwidth, postcopy, abort
    value: int = 0  # milliseconds for max_downtime, bytes/s for bandwidth
    reason: str = ""


class ConvergencePolicy(Protocol):
    def start_flags(self, guest: Guest) -> tuple[str, ...]:
        """Migration flags to set at the start (e.g. POSTCOPY, so the switch is possible later)."""
        ...

    def decide(self, samples: Sequence[Sample], applied: Sequence[Escalation]) -> Escalation | None:
        """The next escalation now, or None to let the migration run on."""
        ...


@runtime_checkable
class MeasuringPolicy(ConvergencePolicy, Protocol):
    """A policy that wants the guest's dirty rate measured; a policy without these two
    methods is never measured for, and costs nothing."""

    def wants_dirty_rate(self, guest: Guest) -> bool:
        """Should QEMU measure this guest's dirty rate from just before the start? False
        when the answer would change nothing (the policy already knows what the guest needs)."""
        ...

    def use_dirty_rate(self, rate: DirtyRate) -> None:
        """The measurement's answer (perhaps why there is none), as soon as it comes: before
        the start, or during the first pass. :meth:`decide` acts on it from its next call."""
        ...


@dataclass(frozen=True)
class MigrationTuning:
    """What one plugin adds to a migration: typed libvirt parameters, flags, report notes."""

    params: dict[str, object]
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
