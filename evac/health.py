"""Is a host dead? One pure state machine over the latest evidence of every source, so
one lost signal is never enough to fence a host.

Each source's :class:`~evac.evidence.Rule` says how its dead verdicts count. A loss is
*confirmed* once the source has said dead ``confirm`` times in a row. Then:

- ``down``: a conclusive source's loss is confirmed (the BMC reads the power off); or
  ``required_losses`` sources' losses are confirmed at once (the libvirt connection is
  lost and the probe has missed twice in a row since);
- ``suspect``: some source says dead, confirmed or not;
- ``up``: no source says dead (each says alive, unknown, or has not spoken yet).

A new source (other replicas' majority, an agent's lease) is one more rule in the
mapping, not one more branch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .evidence import Evidence, Rule, Verdict
from .states import Health


@dataclass(frozen=True)
class Loss:
    """A source that says dead now, ``times`` in a row."""

    source: str
    detail: str
    times: int
    rule: Rule

    @property
    def confirmed(self) -> bool:
        return self.times >= self.rule.confirm

    def describe(self) -> str:
        what = self.detail or f"{self.source} says dead"
        return f"{what} {self.times} times in a row" if self.rule.confirm > 1 and self.times > 1 else what


def judge(losses: Sequence[Loss], required_losses: int = 2) -> tuple[Health, str]:
    """The state the current losses add up to, and why."""
    conclusive = [loss for loss in losses if loss.confirmed and loss.rule.conclusive]
    if conclusive:
        return Health.DOWN, conclusive[0].describe()
    confirmed = [loss for loss in losses if loss.confirmed]
    if len(confirmed) >= required_losses:
        return Health.DOWN, " and ".join(loss.describe() for loss in confirmed)
    if losses:
        return Health.SUSPECT, " and ".join(loss.describe() for loss in losses)
    return Health.UP, ""


@dataclass
class HostHealth:
    host: str
    rules: Mapping[str, Rule]  # by source name; their order is the order reasons name them in
    required_losses: int = 2
    state: Health = Health.UP
    reason: str = ""
    since: float = 0.0
    latest: dict[str, Evidence] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)  # dead verdicts in a row, by source
    history: list[tuple[float, Health, str]] = field(default_factory=list)

    def observe(self, evidence: Evidence) -> Health | None:
        """Record one piece of evidence; returns the new state when it changed."""
        if evidence.host != self.host:
            raise ValueError(f"evidence about {evidence.host!r} given to the health of {self.host!r}")
        if evidence.source not in self.rules:
            raise ValueError(f"unknown evidence source {evidence.source!r}; known: {', '.join(self.rules)}")
        dead = evidence.verdict is Verdict.DEAD
        self.streaks[evidence.source] = self.streaks.get(evidence.source, 0) + 1 if dead else 0
        self.latest[evidence.source] = evidence
        state, reason = judge(self.losses(), self.required_losses)
        if state == self.state:
            return None
        self.state, self.reason, self.since = state, reason, evidence.at
        self.history.append((evidence.at, state, reason))
        return state

    def losses(self) -> list[Loss]:
        return [
            Loss(source, self.latest[source].detail, self.streaks[source], rule)
            for source, rule in self.rules.items()
            if self.streaks.get(source)
        ]
