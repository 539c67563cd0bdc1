"""The vocabulary of migration convergence, shared by the migrate action and policy plugins.

A policy sees samples of the migration job's statistics and answers with the next
escalation, if any. Which escalations exist is bounded by what libvirt can change while
a migration runs: max downtime, bandwidth, the switch to post-copy (enabled at start),
and abort. Compression and auto-converge must be chosen before the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .model import Guest


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


@dataclass(frozen=True)
class MigrationTuning:
    """What one plugin adds to a migration: typed libvirt parameters, flags, report notes."""

    params: dict[str, object]
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
