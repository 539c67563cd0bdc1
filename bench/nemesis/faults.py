"""The faults the nemesis injects and its seeded schedule: which fault, where, for how
long, and which second fault overlaps it.

Pure: the same seed and the same lab shape give the same sequence, so a run is replayed
from the seed it printed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    KILL_CONTROLLER = "kill -9 controller"
    RESTART_SERVICE = "SIGTERM controller"
    POWER_OFF = "power off host"
    CUT_HOST = "cut host"
    CUT_ETCD = "cut etcd traffic"
    KILL_ETCD = "kill etcd member"
    PACKET_LOSS = "20% packet loss"
    KILL_QEMU = "kill guest QEMU"
    STOP_AGENT = "stop agent"
    KILL_DESTINATION = "power off a migration's destination"

    @property
    def on_replica_host(self) -> bool:
        """Faults aimed at an etcd member's host (a replica and a member live there)."""
        return self in (FaultKind.KILL_CONTROLLER, FaultKind.RESTART_SERVICE, FaultKind.CUT_ETCD, FaultKind.KILL_ETCD)

    @property
    def on_guest(self) -> bool:
        return self is FaultKind.KILL_QEMU


LEADER = "leader"  # a controller fault's target: whichever replica leads when it comes
DESTINATION = ""  # KILL_DESTINATION's target: whichever host receives a migration when it comes
QUIET = frozenset({FaultKind.KILL_CONTROLLER, FaultKind.RESTART_SERVICE, FaultKind.KILL_QEMU})  # etcd untouched
AGENT_FAULTS = frozenset({FaultKind.KILL_QEMU, FaultKind.STOP_AGENT})  # need agents to be healed by evac
HOST_LOSS = frozenset({FaultKind.POWER_OFF, FaultKind.CUT_HOST})  # evac fails the host over


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    target: str  # a host, or a guest for KILL_QEMU
    hold: float  # seconds before it is healed


@dataclass(frozen=True)
class LabShape:
    hosts: tuple[str, ...]
    members: tuple[str, ...]  # etcd members, each with a replica
    guests: tuple[str, ...]
    agents: bool = False


def kinds_for(shape: LabShape) -> list[FaultKind]:
    """Every kind this lab can take: agent faults only where agents run."""
    return [k for k in FaultKind if shape.agents or k not in AGENT_FAULTS]


def next_fault(rng: random.Random, shape: LabShape, kinds: list[FaultKind], hold: tuple[float, float]) -> Fault:
    """One fault drawn from ``rng``: a kind, a target that kind applies to, a hold time."""
    kind = rng.choice(kinds)
    if kind.on_guest:
        target = rng.choice(shape.guests)
    elif kind is FaultKind.KILL_DESTINATION:
        target = DESTINATION
    elif kind in (FaultKind.KILL_CONTROLLER, FaultKind.RESTART_SERVICE):
        target = rng.choice((*shape.members, LEADER))
    elif kind.on_replica_host:
        target = rng.choice(shape.members)
    else:
        target = rng.choice(shape.hosts)
    return Fault(kind, target, round(rng.uniform(*hold), 2))


def takes_member(fault: Fault, shape: LabShape) -> bool:
    """The fault may take an etcd member from the cluster: its host lost, cut, slowed or
    reset, or the member itself (a migration's destination is not known beforehand)."""
    if fault.kind in QUIET:
        return False
    return fault.kind is FaultKind.KILL_DESTINATION or fault.target in shape.members


def may_overlap(first: Fault, second: Fault, shape: LabShape) -> bool:
    """Two faults overlap only on different targets, and only one may take an etcd member.

    Two members lost at once lose etcd's quorum, and then every agent's lease lapses and
    every host resets itself by design (a host without quorum must not run guests), so
    the lab would lose all its hosts rather than test evac. A second host can still fail
    with the first (host4 holds no member), a controller can die while a host is down,
    a member can be lost during a drain, and a guest can die while its host is cut."""
    if first.target == second.target and first.target not in (LEADER, DESTINATION):
        return False
    return not (takes_member(first, shape) and takes_member(second, shape))


@dataclass(frozen=True)
class Round:
    """A fault, and maybe a second one injected ``delay`` seconds after it, while it holds."""

    first: Fault
    second: Fault | None = None
    delay: float = 0.0


TRIES = 20  # draws for a second fault that may overlap the first


def next_round(
    rng: random.Random, shape: LabShape, kinds: list[FaultKind], hold: tuple[float, float], overlap: float
) -> Round:
    """A fault, and with probability ``overlap`` a second one that ``may_overlap`` it."""
    first = next_fault(rng, shape, kinds, hold)
    if rng.random() >= overlap:
        return Round(first)
    for _ in range(TRIES):
        second = next_fault(rng, shape, kinds, hold)
        if may_overlap(first, second, shape):
            return Round(first, second, round(rng.uniform(0.0, first.hold), 2))
    return Round(first)


OVERLAP = 0.35  # of rounds with a second fault


def schedule(
    seed: int, shape: LabShape, count: int, hold: tuple[float, float] = (2.0, 6.0), overlap: float = OVERLAP
) -> list[Round]:
    """The first ``count`` rounds of the run seeded ``seed`` (what ``next_round`` draws in turn)."""
    rng = random.Random(seed)
    kinds = kinds_for(shape)
    return [next_round(rng, shape, kinds, hold, overlap) for _ in range(count)]
