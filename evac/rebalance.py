"""Rebalancing: which guests to move so that the hosts carry even loads, within every rule.

A pure function of the same host views and policy the drain plans from, built on
:mod:`evac.placement`'s checks, so a rebalance never puts a guest where a drain could
not (room, bridges, anti-affinity, ``hosts`` rules, maintenance, spares). It plans in
three passes, each move counted against ``max_moves``:

1. **Rule fixes.** A guest running on a host its ``hosts`` rule forbids moves to one the
   rule allows (placement chooses, ``prefer`` included), whatever the load says.
2. **Off the spares.** A guest on a spare host moves to a regular host that has room:
   spares take guests only when no other host can, as in a drain (a guest that prefers
   its spare stays).
3. **Balance.** While the spread of memory load (the highest minus the lowest share of
   each regular host's memory capacity in use, in percent points) is above
   ``threshold``, the move that lowers it most is taken (ties: the one that evens memory,
   then vCPUs, most; then the smaller guest). A move never widens the spread, never
   splits a guest from its affinity group on its host, never takes a guest off a
   preferred host to one it does not prefer, and leaves guests with local disks (a full
   storage copy) and paused guests where they are.

The moves of one plan run in parallel, so room is counted as if every guest leaving a
host were still there until the job ends: no host is ever over its capacity mid-way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field, replace
from typing import Any

from .model import ACTIVE, Guest
from .placement import PLACEABLE_STATES, Chooser, HostView, Move, Policy, Unplaceable, place, rooms, why_not
from .states import HostMode
from .yamldoc import Where, seconds, section_mapping, shown

RUNBOOK = "rebalance"
TARGET = "fleet"  # what a rebalance job is about, in status and history

DEFAULT_THRESHOLD = 10.0  # percent points of memory load between the most and least loaded host
DEFAULT_MAX_MOVES = 10
DEFAULT_POLICY = Policy()
MOVABLE = "running"  # what vm.live_migrate moves


@dataclass(frozen=True)
class Load:
    """One host's load: memory and vCPUs of its running guests against its capacity
    (the policy's overcommit, the host's reserve and the headroom taken off)."""

    host: str
    state: str
    spare: bool
    memory_mib: int
    capacity_mib: int
    vcpus: int
    cpu_capacity: int
    guests: int

    @property
    def counted(self) -> bool:
        """Part of the spread: an up, regular host with room for guests at all."""
        return self.state in PLACEABLE_STATES and not self.spare and self.capacity_mib > 0

    @property
    def memory_pct(self) -> float:
        return _pct(self.memory_mib, self.capacity_mib)

    @property
    def vcpu_pct(self) -> float:
        return _pct(self.vcpus, self.cpu_capacity)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "spare": self.spare,
            "counted": self.counted,
            "guests": self.guests,
            "memory_mib": self.memory_mib,
            "capacity_mib": self.capacity_mib,
            "memory_pct": round(self.memory_pct, 1),
            "vcpus": self.vcpus,
            "cpu_capacity": self.cpu_capacity,
            "vcpu_pct": round(self.vcpu_pct, 1),
        }


def _pct(used: int, capacity: int) -> float:
    if capacity <= 0:
        return 100.0 if used else 0.0
    return 100.0 * used / capacity


def spread(loads: Iterable[Load]) -> float:
    """Highest minus lowest memory load of the counted hosts, in percent points (0 with fewer than two)."""
    shares = [load.memory_pct for load in loads if load.counted]
    return max(shares) - min(shares) if len(shares) > 1 else 0.0


@dataclass(frozen=True)
class RebalancePlan:
    moves: tuple[Move, ...] = ()
    unplaceable: tuple[Unplaceable, ...] = ()
    before: tuple[Load, ...] = ()
    after: tuple[Load, ...] = ()
    threshold: float = DEFAULT_THRESHOLD
    max_moves: int = DEFAULT_MAX_MOVES
    warnings: tuple[str, ...] = ()
    kinds: dict[str, str] = field(default_factory=dict)  # guest -> rule, spare or balance

    @property
    def spread_before(self) -> float:
        return spread(self.before)

    @property
    def spread_after(self) -> float:
        return spread(self.after)

    @property
    def summary(self) -> str:
        moves = f"{len(self.moves)} move{'' if len(self.moves) == 1 else 's'}"
        return (
            f"{moves}: memory load spread {self.spread_before:.0f} -> {self.spread_after:.0f} points"
            f" (threshold {self.threshold:g})"
        )

    def as_dict(self) -> dict[str, Any]:
        """What the plan step returns, and every front door shows: moves with their reasons,
        what stays where it breaks a rule, and the load of each host before and after."""
        return {
            "moves": [
                {
                    "guest": m.guest,
                    "source": m.source,
                    "target": m.target,
                    "reason": m.reason,
                    "memory_mib": m.memory_mib,
                    "vcpus": m.vcpus,
                    "kind": self.kinds.get(m.guest, "balance"),
                    "strategy": "live + storage copy" if m.local_disks else "live",
                }
                for m in self.moves
            ],
            "unplaceable": [
                {"guest": u.guest, "memory_mib": u.memory_mib, "reason": u.reason} for u in self.unplaceable
            ],
            "before": {load.host: load.as_dict() for load in self.before},
            "after": {load.host: load.as_dict() for load in self.after},
            "spread_before": round(self.spread_before, 1),
            "spread_after": round(self.spread_after, 1),
            "threshold": self.threshold,
            "max_moves": self.max_moves,
            "warnings": list(self.warnings),
            "summary": self.summary,
        }


def loads_of(hosts: Iterable[HostView], policy: Policy) -> tuple[Load, ...]:
    """Each host's load, in name order."""
    found = []
    for host in sorted(hosts, key=lambda h: h.name):
        running = [g for g in host.guests if g.state in ACTIVE]
        found.append(
            Load(
                host=host.name,
                state=host.state,
                spare=host.spare,
                memory_mib=sum(g.memory_mib for g in running),
                capacity_mib=host.memory_capacity(policy),
                vcpus=sum(g.vcpus for g in running),
                cpu_capacity=host.cpu_capacity(policy),
                guests=len(running),
            )
        )
    return tuple(found)


class _Fleet:
    """The plan so far: where each guest will run (``now``), and what each host must hold
    while the moves run in parallel (``room``: its guests, leaving or not, and arrivals)."""

    def __init__(self, hosts: list[HostView]) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.now = {h.name: list(h.guests) for h in hosts}
        self.arrivals: dict[str, list[Guest]] = {h.name: [] for h in hosts}
        self.moved: set[str] = set()

    def room(self) -> list[HostView]:
        return [replace(h, guests=(*h.guests, *self.arrivals[h.name])) for h in self.hosts.values()]

    def current(self) -> list[HostView]:
        return [replace(h, guests=tuple(self.now[h.name])) for h in self.hosts.values()]

    def apply(self, guest: Guest, source: str, target: str) -> None:
        self.now[source] = [g for g in self.now[source] if g.name != guest.name]
        landed = replace(guest, host=target)
        self.now[target].append(landed)
        self.arrivals[target].append(landed)
        self.moved.add(guest.name)


def plan_rebalance(
    hosts: Iterable[HostView],
    policy: Policy = DEFAULT_POLICY,
    max_moves: int = DEFAULT_MAX_MOVES,
    threshold: float = DEFAULT_THRESHOLD,
    choose: Chooser | None = None,
) -> RebalancePlan:
    """The moves that fix broken ``hosts`` rules, empty the spares and even out memory load;
    ``choose`` (the ``evac_choose_target`` hook) picks among the hosts that fit for the
    first two, as in a drain."""
    hosts = list(hosts)
    fleet = _Fleet(hosts)
    before = loads_of(hosts, policy)
    moves: list[Move] = []
    kinds: dict[str, str] = {}
    unplaceable: list[Unplaceable] = []
    warnings: list[str] = []
    up = [h for h in hosts if h.state in PLACEABLE_STATES]
    for host in hosts:
        if host.state not in (*PLACEABLE_STATES, HostMode.MAINTENANCE, HostMode.FENCED):
            warnings.append(f"{host.name} is {host.state}: left out (neither source nor target)")

    def room_left() -> bool:
        return len(moves) < max_moves

    # 1. rule fixes
    broken = [
        (g, h.name) for h in up for g in h.guests if g.state in ACTIVE and g.rules.hosts and h.name not in g.rules.hosts
    ]
    deferred = 0
    for guest, source in sorted(broken, key=lambda p: (-p[0].priority, -p[0].memory_mib, p[0].name)):
        if guest.state != MOVABLE:
            why = f"stays on {source} against its hosts rule: {guest.state} (only running guests are live-migrated)"
            unplaceable.append(Unplaceable(guest.name, guest.memory_mib, why))
            continue
        if not room_left():
            deferred += 1
            continue
        placed, stuck = place([guest], source, fleet.room(), policy, choose)
        if stuck:
            unplaceable.append(
                Unplaceable(guest.name, guest.memory_mib, f"stays on {source} against its rule: {stuck[0].reason}")
            )
            continue
        move = replace(placed[0], reason=f"rule fix: {source} is outside its hosts rule; {placed[0].reason}")
        moves.append(move)
        kinds[guest.name] = "rule"
        fleet.apply(guest, source, move.target)
    if deferred:
        warnings.append(f"{deferred} guest(s) on hosts their rule forbids are left for the next run (max_moves)")

    # 2. off the spares
    regular_only = replace(policy, use_spares=False)
    for host in (h for h in up if h.spare):
        for guest in sorted(
            (
                g
                for g in fleet.now[host.name]
                if g.state == MOVABLE and g.name not in fleet.moved and host.name not in g.rules.prefer
            ),
            key=lambda g: (-g.priority, -g.memory_mib, g.name),
        ):
            if not room_left():
                break
            placed, stuck = place([guest], host.name, fleet.room(), regular_only, choose)
            if stuck:
                continue  # a spare may keep guests nothing else has room for
            move = replace(placed[0], reason=f"off spare host {host.name}: {placed[0].reason}")
            moves.append(move)
            kinds[guest.name] = "spare"
            fleet.apply(guest, host.name, move.target)

    # 3. balance
    while room_left():
        best = _best_move(fleet, policy, threshold)
        if best is None:
            break
        guest, source, target, reason = best
        moves.append(Move.of(guest, source, target, reason))
        kinds[guest.name] = "balance"
        fleet.apply(guest, source, target)
    after = loads_of(fleet.current(), policy)
    if len(moves) >= max_moves and spread(after) > threshold:
        warnings.append(f"stopped at max_moves ({max_moves}) with the spread above the threshold")
    return RebalancePlan(
        moves=tuple(moves),
        unplaceable=tuple(unplaceable),
        before=before,
        after=after,
        threshold=threshold,
        max_moves=max_moves,
        warnings=tuple(warnings),
        kinds=kinds,
    )


class _Shares:
    """The counted hosts' memory and vCPU loads, to score one move in constant time: only
    its source and target change."""

    def __init__(self, loads: dict[str, Load]) -> None:
        self.memory = {n: load.memory_pct for n, load in loads.items()}
        self.vcpus = {n: load.vcpu_pct for n, load in loads.items()}
        self.order = sorted(self.memory, key=lambda n: (self.memory[n], n))
        self.memory_squares = sum(v * v for v in self.memory.values())
        self.vcpu_squares = sum(v * v for v in self.vcpus.values())

    def spread(self, changed: dict[str, float] | None = None) -> float:
        changed = changed or {}
        low = next((self.memory[n] for n in self.order if n not in changed), None)
        high = next((self.memory[n] for n in reversed(self.order) if n not in changed), None)
        values = [*changed.values(), *(v for v in (low, high) if v is not None)]
        return max(values) - min(values) if len(self.memory) > 1 else 0.0

    def squares(self, memory: dict[str, float], vcpus: dict[str, float]) -> tuple[float, float]:
        return (
            self.memory_squares + sum(v * v - self.memory[n] ** 2 for n, v in memory.items()),
            self.vcpu_squares + sum(v * v - self.vcpus[n] ** 2 for n, v in vcpus.items()),
        )


EPSILON = 1e-9  # below this, a change in the sum of squared loads is rounding, not evening


def _best_move(fleet: _Fleet, policy: Policy, threshold: float) -> tuple[Guest, str, str, str] | None:
    """The one balancing move that lowers the spread most (ties: evens memory, then vCPUs,
    most; then the smaller guest), or None when the spread is within ``threshold`` or no
    move lowers the spread or, keeping it, evens memory."""
    current = {load.host: load for load in loads_of(fleet.current(), policy) if load.counted}
    if len(current) < 2:
        return None
    shares = _Shares(current)
    now = shares.spread()
    if now <= threshold:
        return None
    room = {name: r for name, r in rooms(fleet.room()).items() if name in current}
    mean = sum(shares.memory.values()) / len(shares.memory)
    best: tuple[tuple[float, float, float, int, str, str], Guest, str, str] | None = None
    for source in (n for n in current if shares.memory[n] > mean):
        here = fleet.now[source]
        source_networks = fleet.hosts[source].networks
        src = current[source]
        for guest in here:
            if not _may_leave(guest, here, fleet.moved):
                continue
            for target, dst in current.items():
                if shares.memory[target] >= shares.memory[source] or not _may_go(guest, source, target):
                    continue
                memory = {
                    source: _pct(src.memory_mib - guest.memory_mib, src.capacity_mib),
                    target: _pct(dst.memory_mib + guest.memory_mib, dst.capacity_mib),
                }
                after = shares.spread(memory)
                if after > now:
                    continue
                vcpus = {
                    source: _pct(src.vcpus - guest.vcpus, src.cpu_capacity),
                    target: _pct(dst.vcpus + guest.vcpus, dst.cpu_capacity),
                }
                memory_squares, vcpu_squares = shares.squares(memory, vcpus)
                if after == now and memory_squares > shares.memory_squares - EPSILON:
                    continue
                key = (after, memory_squares, vcpu_squares, guest.memory_mib, guest.name, target)
                if best is not None and key >= best[0]:
                    continue
                if why_not(guest, room[target], policy, source_networks) is None:
                    best = (key, guest, source, target)
    if best is None:
        return None
    _, guest, source, target = best
    src, dst = current[source], current[target]
    reason = (
        f"evens memory load: {source} {src.memory_pct:.0f}% -> "
        f"{_pct(src.memory_mib - guest.memory_mib, src.capacity_mib):.0f}%, {target} {dst.memory_pct:.0f}% -> "
        f"{_pct(dst.memory_mib + guest.memory_mib, dst.capacity_mib):.0f}%"
    )
    if target in guest.rules.prefer:
        reason += "; preferred host"
    if guest.rules.hosts:
        reason += f"; within its hosts rule ({', '.join(guest.rules.hosts)})"
    free = room[target].free_memory(policy) - guest.memory_mib
    return guest, source, target, f"{reason}: {free} MiB left"


def _may_leave(guest: Guest, here: list[Guest], moved: set[str]) -> bool:
    """A balancing move may take this guest off its host: it runs, has no local disk to
    copy, was not moved by this plan already, and has no affinity group member beside it."""
    if guest.state != MOVABLE or guest.local_disks or guest.name in moved:
        return False
    groups = set(guest.affinity)
    return not any(groups & set(other.affinity) for other in here if other.name != guest.name)


def _may_go(guest: Guest, source: str, target: str) -> bool:
    """``target`` keeps the guest's rules: inside its ``hosts``, and not off a preferred host
    to one it does not prefer."""
    if guest.rules.hosts and target not in guest.rules.hosts:
        return False
    prefer = guest.rules.prefer
    return not (prefer and source in prefer and target not in prefer)


# ---------------------------------------------------------------- settings
SECTION_KEYS = ("every", "max_moves", "threshold")
MIN_EVERY = 60.0  # a periodic rebalance sooner than this would chase its own migrations
MAX_EVERY = 7 * 86400.0


@dataclass(frozen=True)
class RebalanceSettings:
    """The ``rebalance:`` section of evac.yaml::

        rebalance:
          every: 3600      # seconds; evac serve starts a rebalance this often (absent: never)
          max_moves: 5     # the defaults of `evac rebalance` and Slack's too
          threshold: 15

    Without ``every`` nothing runs on its own: periodic rebalancing is off by default."""

    every: float | None = None
    max_moves: int = DEFAULT_MAX_MOVES
    threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def of(cls, sections: AbcMapping[str, Any]) -> RebalanceSettings:
        """The parsed section among a config's plugin sections, else the defaults."""
        found = sections.get("rebalance")
        return found if isinstance(found, RebalanceSettings) else cls()

    def params(self) -> dict[str, Any]:
        """The ``rebalance`` runbook's params these settings give."""
        return {"max_moves": self.max_moves, "threshold": self.threshold}


def parse_rebalance(data: Any, source: str) -> RebalanceSettings:
    """The ``rebalance:`` section (registered through ``evac_config_sections``)."""
    where = Where(source)
    section = section_mapping(data, source, "rebalance")
    where.reject_unknown(section, SECTION_KEYS, "rebalance.")
    every = None
    if "every" in section:
        try:
            every = seconds(section["every"], MAX_EVERY, " (a week)")
        except ValueError as exc:
            raise where.error(section.line_of("every"), "rebalance.every", str(exc)) from None
        if every < MIN_EVERY:
            raise where.error(
                section.line_of("every"),
                "rebalance.every",
                f"expected at least {MIN_EVERY:g} seconds (migrations need time to settle), got {shown(every)}",
            )
    max_moves = section.get("max_moves", DEFAULT_MAX_MOVES)
    if not isinstance(max_moves, int) or isinstance(max_moves, bool) or not 1 <= max_moves <= 1000:
        raise where.error(
            section.line_of("max_moves"),
            "rebalance.max_moves",
            f"expected a whole number 1-1000, got {shown(max_moves)}",
        )
    threshold = section.get("threshold", DEFAULT_THRESHOLD)
    if (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not math.isfinite(threshold)
        or not 0 <= threshold <= 100
    ):
        raise where.error(
            section.line_of("threshold"),
            "rebalance.threshold",
            f"expected percent points 0-100 of memory load, got {shown(threshold)}",
        )
    return RebalanceSettings(every=every, max_moves=max_moves, threshold=float(threshold))
