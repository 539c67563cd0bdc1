"""The faults the nemesis injects and its seeded schedule: which fault, where, for how long.

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
        target = ""  # whichever host receives a migration when it comes
    elif kind.on_replica_host:
        target = rng.choice(shape.members)
    else:
        target = rng.choice(shape.hosts)
    return Fault(kind, target, round(rng.uniform(*hold), 2))


def schedule(seed: int, shape: LabShape, count: int, hold: tuple[float, float] = (2.0, 6.0)) -> list[Fault]:
    """The first ``count`` faults of the run seeded ``seed`` (what ``next_fault`` draws in turn)."""
    rng = random.Random(seed)
    kinds = kinds_for(shape)
    return [next_fault(rng, shape, kinds, hold) for _ in range(count)]
