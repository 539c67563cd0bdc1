"""The default convergence policy: measure, predict, and escalate only when it will help.

Pre-copy converges when the link sends faster than the guest dirties memory. After the
first full pass the policy compares the measured dirty rate with the measured bandwidth:

- converging (dirty rate well under bandwidth, remaining shrinking): leave it alone;
- not converging, but the pause needed to send what is left is short (``quiet_pause_ms``,
  or ``downtime_limit_ms`` when post-copy is off): raise the allowed downtime once;
- otherwise switch to post-copy (enabled at the start, so the switch is possible), which
  finishes in about one pass whatever the dirty rate;
- post-copy not allowed: abort and report, leaving the guest running on its source.

It learns: a guest whose last migration needed post-copy switches halfway through the
first pass of its next migration (QEMU reports a dirty rate only after a whole pass). It also
escalates when the remaining bytes stop shrinking for ``stall_passes`` passes,
since a dirty rate QEMU reports can lag behind the guest,
whatever the rates say. Measured on the lab (256 MiB guest rewriting ~1 GiB/s, 50 MiB/s
cap): plain never converges, auto-converge takes 34-37 s, post-copy 4-6 s.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evac import hookimpl
from evac.convergence import Escalation, Sample
from evac.model import Guest


@dataclass
class AdaptivePolicy:
    """One instance per migration: it remembers the pass at which it raised the downtime."""

    downtime_limit_ms: int = 2000
    allow_postcopy: bool = True
    stall_passes: int = 2
    margin: float = 1.5
    quiet_pause_ms: int = 300  # a pause this short is preferred to post-copy; longer ones are not
    learned: str = ""  # what this guest's last migration needed ("postcopy"), from the journal
    raised_at_pass: int | None = None

    def start_flags(self, guest: Guest) -> tuple[str, ...]:
        return ("POSTCOPY",) if self.allow_postcopy else ()

    def decide(self, samples: Sequence[Sample], applied: Sequence[Escalation]) -> Escalation | None:
        kinds = {e.kind for e in applied}
        if "postcopy" in kinds or "abort" in kinds or len(samples) < 2:
            return None
        last = samples[-1]
        if self.learned == "postcopy" and self.allow_postcopy and last.total and last.processed >= last.total / 2:
            # not at once: with half the memory across, fewer pages are faulted in remotely
            return Escalation("postcopy", 0, "this guest needed post-copy last time: switching after half a pass")
        if last.iteration < 2:
            return None  # the first pass sends everything once; rates say nothing yet
        rates = [s.bandwidth for s in samples[-8:] if s.bandwidth > 0]
        if not rates:
            return None
        bandwidth = statistics.median(rates)
        needed_ms = int(last.remaining / bandwidth * 1000)
        stalled = self._stalled(samples)
        converging = last.dirty_rate < 0.8 * bandwidth and not stalled
        if converging:
            return None
        why = f"dirty {last.dirty_rate / 2**20:.0f} MiB/s vs link {bandwidth / 2**20:.0f} MiB/s"
        if stalled:
            why = f"no progress in {self.stall_passes} passes; " + why
        pause_ok = needed_ms * self.margin <= min(
            self.downtime_limit_ms, self.quiet_pause_ms if self.allow_postcopy else self.downtime_limit_ms
        )
        if self.raised_at_pass is None and pause_ok:
            self.raised_at_pass = last.iteration
            return Escalation(
                "max_downtime", max(int(needed_ms * self.margin), 50), f"{why}: allow {needed_ms} ms pause"
            )
        if self.raised_at_pass is not None and last.iteration < self.raised_at_pass + 2:
            return None  # give the raised downtime two passes
        if self.allow_postcopy:
            return Escalation("postcopy", 0, f"{why}: pre-copy cannot finish within {self.downtime_limit_ms} ms")
        return Escalation("abort", 0, f"{why}: will not converge and post-copy is off")

    def _stalled(self, samples: Sequence[Sample]) -> bool:
        """Remaining bytes at the start of each pass did not shrink for ``stall_passes`` passes."""
        firsts: dict[int, int] = {}
        for s in samples:
            firsts.setdefault(s.iteration, s.remaining)
        passes = [firsts[i] for i in sorted(firsts)][-(self.stall_passes + 1) :]
        return len(passes) > self.stall_passes and min(passes[1:]) >= passes[0]


@hookimpl(trylast=True)
def evac_convergence_policy(guest: Guest, options: Mapping[str, Any]) -> AdaptivePolicy:
    allow = options.get("allow_postcopy", True)
    return AdaptivePolicy(
        downtime_limit_ms=int(options.get("downtime_limit_ms") or 2000),
        allow_postcopy=str(allow).lower() not in ("false", "0", "no"),
        learned=str(options.get("learned") or ""),
    )
