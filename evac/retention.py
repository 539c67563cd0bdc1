"""How long the journal keeps a job's events and the audit trail.

The journal grows with every job (its events) and every audited request. The service
prunes it periodically with :func:`prune`; the policy is pure, so it is tested without
a clock or a file:

- a job's events are kept ``events_days`` after the job finished, then removed all
  together (never some of a job's events); events of unfinished jobs are never removed,
  since resuming a job reads them. The job's own row (runbook, target, state, error,
  times) stays, so ``evac history`` still lists it;
- audit rows are kept ``audit_days``, then removed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .journal import Journal

DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    events_days: float = 30.0
    audit_days: float = 365.0
    every: float = 3600.0  # seconds between two prunes by the service

    def __post_init__(self) -> None:
        for name in ("events_days", "audit_days", "every"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")

    def cutoffs(self, now: float) -> tuple[float, float]:
        """(events_before, audit_before): what :meth:`Journal.prune` removes at ``now``."""
        return now - self.events_days * DAY, now - self.audit_days * DAY


def prune(journal: Journal, retention: Retention, now: float | None = None) -> tuple[int, int]:
    """Apply ``retention`` to ``journal``; (events, audit rows) removed."""
    events_before, audit_before = retention.cutoffs(time.time() if now is None else now)
    return journal.prune(events_before, audit_before)
