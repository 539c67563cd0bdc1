"""Self-fencing by watchdog: the agent's rule, and the timings that make it a fence.

A host without a BMC evac can reach is fenced by its own watchdog. Its agent feeds the
watchdog only while the host is healthy (:func:`may_feed`): it holds its etcd lease, or
it lost etcd but a majority of its peers say they lost it too (the store failed, not
this host). A host cut off from both stops feeding and its watchdog resets it.

The leader counts such a host as fenced (``fence: [{method: watchdog}]``) only when its
agent's lease key was deleted by expiry (not by a clean stop), the watchdog timeout plus
a margin has passed since, the host answers nothing, and a majority of the other agents
still hold their leases. The margin must cover the ways the host could have fed its
watchdog later than the deletion suggests (:meth:`Timings.needed_margin`):

- a peer vouches ("I cannot reach etcd either") as soon as its own session is invalid
  by its clock, up to its session margin before etcd deletes its lease, and the answer
  takes up to ``peer_timeout`` to arrive and be acted on;
- a watchdog that fires takes ``reset`` seconds to take the host down;
- clocks run at slightly different rates (``DRIFT``) over the whole wait.

The lease's own renewal delay needs no allowance: an agent judges its lease by the time
it *sent* its last answered keepalive, which is never later than etcd's.

While HA is disarmed (``evac ha disarm``) an agent feeds whatever happens, so its
watchdog fences nothing. Whether an agent self-fences is its :class:`HaMode`, and its
state record in etcd acknowledges it. Arming takes effect before its acknowledgment is
written, disarming only after (:func:`mode_while_acknowledging`): a record that says
``armed`` never stands for an agent that feeds whatever happens. The leader counts a
watchdog fence only under such a record, unchanged while it judged
(:func:`watchdog_counts`); any rewrite of the record restarts its count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .etcdsession import safety_margin

DRIFT = 0.001  # clock-rate difference allowed between two machines: 1000 ppm, twice NTP's worst slew


@dataclass(frozen=True)
class Timings:
    """The ``agent:`` section's timings, in seconds."""

    lease_ttl: float = 3.0  # the agent's etcd lease
    watchdog_timeout: float = 10.0  # unfed this long, the watchdog resets the host
    margin: float = 3.0  # the leader's wait beyond the timeout, counted from the lease key's deletion
    peer_timeout: float = 0.5  # one question to a peer's agent
    reset: float = 1.0  # from the watchdog firing to the host being down

    @property
    def session_margin(self) -> float:
        """How long before its lease may expire an agent stops trusting it (and may vouch)."""
        return safety_margin(self.lease_ttl)

    @property
    def feed_every(self) -> float:
        """How often the agent decides and feeds: several times per timeout and per lease."""
        return min(self.watchdog_timeout / 4, self.lease_ttl / 3, 1.0)

    def needed_margin(self) -> dict[str, float]:
        """What the margin must cover, term by term (their sum is the minimum)."""
        wait = self.lease_ttl + self.watchdog_timeout + self.margin
        return {
            "peer vouching before its lease is deleted": self.session_margin,
            "a peer's answer in flight": self.peer_timeout,
            "watchdog reset": self.reset,
            f"clock drift ({DRIFT * 1e6:.0f} ppm over {wait:.1f} s)": DRIFT * wait,
        }

    def minimum_margin(self) -> float:
        return sum(self.needed_margin().values())

    def worst_case(self) -> float:
        """Seconds from a host's last lease renewal to evac counting it fenced: the lease
        expires, then the timeout and the margin pass (restarting its guests comes after)."""
        return self.lease_ttl + self.watchdog_timeout + self.margin

    def problem(self) -> tuple[str, str] | None:
        """Why these timings do not make a fence: (the setting to change, why); or None."""
        busy = self.feed_every + self.peer_timeout
        if busy >= self.watchdog_timeout / 2:
            return "watchdog.timeout", (
                f"watchdog timeout {self.watchdog_timeout:g} s is too short: a round of feeding takes up to "
                f"{busy:.2f} s (every {self.feed_every:g} s, asking peers for up to {self.peer_timeout:g} s), "
                "and must fit twice"
            )
        short = self.minimum_margin() - self.margin
        if short > 1e-9:
            terms = ", ".join(f"{name} {value:.2f} s" for name, value in self.needed_margin().items())
            return "margin", (
                f"margin {self.margin:g} s is {short:.2f} s short of the {self.minimum_margin():.2f} s it must cover "
                f"({terms})"
            )
        return None

    def summary(self) -> str:
        return (
            f"a host with no BMC is counted fenced at most {self.worst_case():.1f} s after its agent's last lease "
            f"renewal (lease {self.lease_ttl:g} s + watchdog {self.watchdog_timeout:g} s + margin {self.margin:g} s; "
            f"the margin must be at least {self.minimum_margin():.2f} s)"
        )


@dataclass(frozen=True)
class PeerAnswer:
    """One peer agent's answer to "can you reach etcd?"; ``None`` for no (valid) answer."""

    host: str
    reaches_etcd: bool | None
    detail: str = ""


def may_feed(holds_lease: bool, answers: Mapping[str, PeerAnswer], peers: int) -> tuple[bool, str]:
    """The agent's rule: feed while holding the lease, or while a majority of all its peers
    (not of those that answered) say they cannot reach etcd either. No peers at all: a
    lone host cannot tell its own isolation from the store's failure, so it does not feed."""
    if holds_lease:
        return True, "holds its lease"
    lost = sorted(a.host for a in answers.values() if a.reaches_etcd is False)
    need = peers // 2 + 1
    if peers and len(lost) >= need:
        return True, f"etcd lost here and by {len(lost)} of {peers} peers ({', '.join(lost)}): the store failed"
    reach = sorted(a.host for a in answers.values() if a.reaches_etcd)
    silent = sorted(a.host for a in answers.values() if a.reaches_etcd is None)
    parts = [f"etcd lost; {len(lost)} of {peers} peers lost it too ({need} must)"]
    if reach:
        parts.append(f"{', '.join(reach)} reach etcd: this host is the isolated one")
    if silent:
        parts.append(f"no answer from {', '.join(silent)}")
    return False, "; ".join(parts)


class HaMode(StrEnum):
    """How an agent treats its watchdog, as it last saw HA (the journal's ``disarmed`` key)."""

    ARMED = "armed"  # it self-fences: feeds only as :func:`may_feed` allows
    DISARMED = "disarmed"  # it feeds whatever happens (``evac ha disarm``)


def feeds(mode: HaMode, holds_lease: bool, answers: Mapping[str, PeerAnswer], peers: int) -> tuple[bool, str]:
    """The agent's whole rule: while HA is disarmed it feeds whatever happens (a host is
    never reset then), else as :func:`may_feed` says."""
    if mode is HaMode.DISARMED:
        return True, "HA disarmed: fed whatever happens"
    return may_feed(holds_lease, answers, peers)


def mode_while_acknowledging(current: HaMode, seen: HaMode) -> HaMode:
    """The mode an agent runs in while it writes its acknowledgment of ``seen``: armed if
    either is. Arming takes effect before the record says so (a record still saying
    ``disarmed`` only keeps the leader from counting the watchdog a moment longer);
    disarming takes effect only once etcd has the record. So no record says ``armed``
    while its agent feeds whatever happens."""
    return HaMode.ARMED if HaMode.ARMED in (current, seen) else HaMode.DISARMED


@dataclass(frozen=True)
class Acknowledged:
    """What an agent's state record says it last saw of HA, and the record's etcd revision
    (0: no record). ``mode`` None: the record acknowledges nothing (written by an agent
    older than ``evac ha``, or rewritten by a controller)."""

    mode: HaMode | None
    revision: int = 0

    @classmethod
    def parse(cls, value: str | None, revision: int = 0) -> Acknowledged:
        try:
            data = json.loads(value) if value is not None else {}
            return cls(HaMode(data["ha"]), revision)
        except (ValueError, KeyError, TypeError):
            return cls(None, revision)


def watchdog_counts(host: str, before: Acknowledged | None, after: Acknowledged | None) -> tuple[bool | None, str]:
    """The HA half of the leader's count of a watchdog fence, from the host's record read
    ``before`` and ``after`` the rest of the count (None: etcd did not answer). True:
    its agent acknowledged HA armed, in a record that stood unchanged throughout, so the
    agent self-fenced from before that record was written (a rewrite restarts the count).
    False: it never will count so (why, and what to do instead). None: judge again."""
    if before is None or after is None:
        return None, f"{host}'s agent record could not be read"
    if before.revision != after.revision:
        return None, f"{host}'s agent record was rewritten while it was judged"
    if after.mode is HaMode.ARMED:
        return True, "its agent acknowledged HA armed"
    instead = f"fence {host} another way, or confirm it off by hand (`evac fence {host} --confirm-manually`)"
    if after.mode is HaMode.DISARMED:
        return False, (
            f"{host}'s agent last acknowledged HA disarmed, so it may still feed its watchdog whatever "
            f"happens; {instead}"
        )
    return False, f"{host}'s agent never acknowledged HA armed (an agent older than `evac ha`?); {instead}"
