"""The default convergence policy: measure, predict, and escalate only when it will help.

Pre-copy converges when the link sends faster than the guest dirties memory. After the
first full pass the policy compares the measured dirty rate with the measured bandwidth:

- converging (dirty rate well under bandwidth, remaining shrinking): leave it alone;
- not converging, but the pause needed to send what is left is short (``quiet_pause_ms``,
  or ``downtime_limit_ms`` when post-copy is off): raise the allowed downtime once;
- otherwise switch to post-copy (enabled at the start, so the switch is possible), which
  finishes in about one pass whatever the dirty rate;
- post-copy not allowed: abort and report, leaving the guest running on its source.

A guest whose last migration needed post-copy switches halfway through the first pass of
its next migration: the migration's statistics give a dirty rate only after a whole pass.
A guest without history has its dirty rate measured by QEMU from just before the start
(:mod:`evac.dirtyrate`, 1 s); with the link rate of the first samples,
:func:`choose_strategy` predicts what pre-copy would cost and, when post-copy saves enough,
the policy switches halfway through the first pass too. Otherwise it goes on as above.
It also escalates when the remaining bytes stop shrinking for ``stall_passes`` passes,
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
from evac.convergence import Escalation, Sample, Strategy
from evac.dirtyrate import SMALLEST_SAMPLED_MIB, DirtyRate
from evac.model import Guest

MiB = 2**20


@dataclass(frozen=True)
class Plan:
    strategy: Strategy
    reason: str


def choose_strategy(
    dirty_rate: float,
    period: float,
    memory: float,
    bandwidth: float,
    allow_postcopy: bool = True,
    quiet_pause_ms: int = 300,
    margin: float = 1.5,
) -> Plan:
    """Post-copy or plain pre-copy, for a guest that wrote ``dirty_rate`` bytes/s of distinct
    pages over ``period`` seconds, of its ``memory`` bytes, over a link of ``bandwidth`` bytes/s.

    Pre-copy cannot converge when the guest dirties faster than the link sends. Nor can it
    end quietly when what the guest wrote in the measured period needs a pause longer than
    ``quiet_pause_ms`` (with ``margin``): the guest may rewrite that working set between two
    passes however short, so the last pass ends with that pause, and the adaptive policy
    prefers post-copy to any longer one. Either way the policy would reach post-copy after a
    pass or two; planned, it switches during the first. Otherwise pre-copy's passes shrink
    by ``q = dirty_rate / bandwidth`` and it takes about ``1 / (1 - q)`` times one pass; a
    working set that fits the quiet pause keeps that under 1.25x with the default numbers,
    which is not worth post-copy's risks (remote page faults slow the guest, and a link lost
    during post-copy loses it).
    """
    why = f"dirty {dirty_rate / MiB:.0f} MiB/s measured vs link {bandwidth / MiB:.0f} MiB/s"
    if not allow_postcopy:
        return Plan(Strategy.PLAIN, f"{why}: post-copy is off")
    if bandwidth <= 0:
        return Plan(Strategy.PLAIN, f"{why}: no link rate to compare with")
    q = dirty_rate / bandwidth
    if q >= 1:
        return Plan(Strategy.POSTCOPY, f"{why}: pre-copy cannot converge")
    pause_ms = min(dirty_rate * period, memory) / bandwidth * 1000
    if pause_ms * margin > quiet_pause_ms:
        return Plan(Strategy.POSTCOPY, f"{why}: pre-copy would end with a pause of about {pause_ms:.0f} ms")
    return Plan(Strategy.PLAIN, f"{why}: pre-copy takes {1 / (1 - q):.1f}x a post-copy, then a {pause_ms:.0f} ms pause")


@dataclass
class AdaptivePolicy:
    """One instance per migration: it remembers the pass at which it raised the downtime."""

    downtime_limit_ms: int = 2000
    allow_postcopy: bool = True
    stall_passes: int = 2
    margin: float = 1.5
    quiet_pause_ms: int = 300  # a pause this short is preferred to post-copy; longer ones are not
    learned: str = ""  # what this guest's last migration needed ("postcopy"), from the journal
    dirty_rate: DirtyRate | None = None  # measured from just before the start, for a guest without history
    plan: Plan | None = None
    raised_at_pass: int | None = None

    def start_flags(self, guest: Guest) -> tuple[str, ...]:
        return ("POSTCOPY",) if self.allow_postcopy else ()

    def wants_dirty_rate(self, guest: Guest) -> bool:
        """Only a guest without history, and only when post-copy may follow from it: a
        measurement costs a second (when not overlapped with the first pass), and QEMU does
        not sample a guest under 128 MiB."""
        return (
            self.allow_postcopy
            and not self.learned
            and self.dirty_rate is None
            and guest.memory_mib >= SMALLEST_SAMPLED_MIB
        )

    def use_dirty_rate(self, rate: DirtyRate) -> None:
        self.dirty_rate = rate

    def decide(self, samples: Sequence[Sample], applied: Sequence[Escalation]) -> Escalation | None:
        kinds = {e.kind for e in applied}
        if "postcopy" in kinds or "abort" in kinds or len(samples) < 2:
            return None
        last = samples[-1]
        plan = self._planned(samples)
        halfway = bool(last.total) and last.processed >= last.total / 2
        if plan and plan.strategy is Strategy.POSTCOPY and self.allow_postcopy and halfway:
            # not at once: with half the memory across, fewer pages are faulted in remotely
            return Escalation("postcopy", 0, f"{plan.reason}: switching after half a pass")
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

    def _planned(self, samples: Sequence[Sample]) -> Plan | None:
        """The strategy chosen before the first pass ends: from history, else from the
        measured dirty rate once the samples show the link's rate. Chosen once, then kept."""
        if self.plan is None and self.learned in tuple(Strategy):
            self.plan = Plan(Strategy(self.learned), f"this guest needed {self.learned} last time")
        elif self.plan is None and self.dirty_rate is not None and self.dirty_rate.measured:
            rates = [s.bandwidth for s in samples[-8:] if s.bandwidth > 0]
            if rates and samples[-1].total:
                self.plan = choose_strategy(
                    self.dirty_rate.bytes_per_second,
                    self.dirty_rate.period or 1.0,
                    samples[-1].total,
                    statistics.median(rates),
                    self.allow_postcopy,
                    min(self.quiet_pause_ms, self.downtime_limit_ms),
                    self.margin,
                )
        return self.plan

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
