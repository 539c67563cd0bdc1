"""Where guests go: a pure function of an inventory snapshot and a policy.

``plan_drain`` never talks to libvirt, so it is tested exhaustively without it, and its
:class:`Plan` is the one object behind ``--dry-run``, the Slack preview and the engine.
Every move carries the reason for its target; every guest left behind carries the
reason it could not go anywhere, naming the constraint that blocked it (not "no room"
when the cause was a rule).

A guest's own rules (:class:`~evac.model.GuestRules`, resolved by
:mod:`evac.guestrules`) bind every plan made here, so drain, failover, return and
rebalance all honour them: ``hosts`` is a must (no other host is ever chosen, and a
guest none of them can take says, host by host, why), ``prefer`` a should (a preferred
host that fits wins; the move's reason says whether one did).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from .model import ACTIVE, Guest
from .networks import Networks, bridge_on
from .states import Health, HostMode

PLACEABLE_STATES = (Health.UP,)


@dataclass(frozen=True)
class Policy:
    memory_overcommit: float = 1.0
    cpu_overcommit: float = 4.0
    headroom_memory_mib: int = 256  # kept free on every target
    use_spares: bool = True  # spares take guests only when no other host can


@dataclass(frozen=True)
class HostView:
    """A host as placement sees it. ``bridges`` None: unknown, not checked."""

    name: str
    state: str  # Health.UP or DOWN, a HostMode (maintenance, fenced), or "unreachable"
    memory_mib: int
    cpus: int
    guests: tuple[Guest, ...] = ()
    reserved_memory_mib: int = 0
    reserved_cpus: int = 0
    spare: bool = False
    bridges: frozenset[str] | None = None
    bridge_mtus: tuple[tuple[str, int], ...] = ()
    networks: Networks = ()  # (network, bridge) from the inventory

    def memory_capacity(self, policy: Policy) -> int:
        return int(self.memory_mib * policy.memory_overcommit) - self.reserved_memory_mib - policy.headroom_memory_mib

    def cpu_capacity(self, policy: Policy) -> int:
        return int(self.cpus * policy.cpu_overcommit) - self.reserved_cpus


@dataclass(frozen=True)
class Move:
    guest: str
    memory_mib: int
    vcpus: int
    source: str
    target: str
    reason: str
    priority: int = 0
    local_disks: tuple[str, ...] = ()

    @classmethod
    def of(cls, guest: Guest, source: str, target: str, reason: str) -> Move:
        return cls(
            guest=guest.name,
            memory_mib=guest.memory_mib,
            vcpus=guest.vcpus,
            source=source,
            target=target,
            reason=reason,
            priority=guest.priority,
            local_disks=tuple(d.target for d in guest.local_disks),
        )


@dataclass(frozen=True)
class Unplaceable:
    guest: str
    memory_mib: int
    reason: str


@dataclass(frozen=True)
class Plan:
    source: str
    moves: tuple[Move, ...] = ()
    unplaceable: tuple[Unplaceable, ...] = ()
    warnings: tuple[str, ...] = ()
    untouched: tuple[str, ...] = field(default_factory=tuple)  # guests not running: left defined where they are

    def as_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class Room:
    """What a host holds while a plan is made: its running guests' memory, vCPUs and groups,
    plus every guest the plan has sent there so far."""

    host: HostView
    memory: int
    vcpus: int
    groups: set[str]
    affinity: set[str]

    def free_memory(self, policy: Policy) -> int:
        return self.host.memory_capacity(policy) - self.memory

    def free_cpus(self, policy: Policy) -> int:
        return self.host.cpu_capacity(policy) - self.vcpus

    def take(self, guest: Guest) -> None:
        self.memory += guest.memory_mib
        self.vcpus += guest.vcpus
        self.groups.update(guest.anti_affinity)
        self.affinity.update(guest.affinity)


Chooser = Callable[[Guest, list[str]], str | None]


def rooms(hosts: Iterable[HostView]) -> dict[str, Room]:
    """Each host's room by name (every host, whatever its state: callers pick)."""
    loads = {}
    for host in hosts:
        running = [g for g in host.guests if g.state in ACTIVE]
        loads[host.name] = Room(
            host,
            memory=sum(g.memory_mib for g in running),
            vcpus=sum(g.vcpus for g in running),
            groups={grp for g in running for grp in g.anti_affinity},
            affinity={grp for g in running for grp in g.affinity},
        )
    return loads


def why_not(guest: Guest, load: Room, policy: Policy, source_networks: Networks = ()) -> str | None:
    """The first constraint that keeps ``guest`` off this host, or None if it fits."""
    host = load.host
    if host.bridges is not None:
        for nic in guest.interfaces:
            if nic.kind != "bridge":
                continue
            bridge = bridge_on(host.networks, source_networks, nic.source)
            if bridge not in host.bridges:
                return f"no bridge '{bridge}'" + (f" (for '{nic.source}')" if bridge != nic.source else "")
            mtu = dict(host.bridge_mtus).get(bridge)
            if nic.mtu and mtu and nic.mtu > mtu:
                return f"bridge '{bridge}' MTU {mtu} < {nic.mtu}"
    clash = set(guest.anti_affinity) & load.groups
    if clash:
        return f"anti-affinity group '{sorted(clash)[0]}'"
    if guest.memory_mib > load.free_memory(policy):
        return f"memory: needs {guest.memory_mib} MiB, {max(load.free_memory(policy), 0)} MiB free"
    if guest.vcpus > load.free_cpus(policy):
        return f"vCPUs: needs {guest.vcpus}, {max(load.free_cpus(policy), 0)} free"
    return None


def _summarise(reasons: dict[str, str]) -> str:
    """One reason per host, grouped: 'host2, host3: no bridge 'br9'; host4: memory: ...'."""
    by_reason: dict[str, list[str]] = {}
    for host, reason in sorted(reasons.items()):
        by_reason.setdefault(reason, []).append(host)
    return "; ".join(f"{', '.join(hosts)}: {reason}" for reason, hosts in by_reason.items())


def _state_text(state: str) -> str:
    return "in maintenance" if state == HostMode.MAINTENANCE else state


def _why_each(
    names: Iterable[str],
    source: str,
    every: dict[str, HostView],
    reasons: dict[str, str],
    excluded: set[str],
    policy: Policy,
) -> dict[str, str]:
    """Why each named host cannot take the guest, for a rule's message; hosts that can are left out."""
    found = {}
    for name in names:
        host = every.get(name)
        if name == source:
            found[name] = "the host it leaves"
        elif host is None:
            found[name] = "not in the inventory"
        elif name in excluded:
            found[name] = "excluded"
        elif host.state not in PLACEABLE_STATES:
            found[name] = _state_text(host.state)
        elif name in reasons:
            found[name] = reasons[name]
        elif host.spare and not policy.use_spares:
            found[name] = "spare host, and spares are not allowed"
    return found


def place(
    guests: Iterable[Guest],
    source: str,
    hosts: Iterable[HostView],
    policy: Policy = Policy(),
    choose: Chooser | None = None,
    exclude: Iterable[str] = (),
) -> tuple[list[Move], list[Unplaceable]]:
    """Targets for ``guests`` (leaving ``source``), most important and largest first.

    A guest with a ``hosts`` rule goes to one of those hosts or nowhere; one with a
    ``prefer`` rule goes to a preferred host when one fits (a plugin's ``choose`` then
    picks among the preferred ones)."""
    hosts = list(hosts)
    every = {h.name: h for h in hosts}
    excluded = set(exclude)
    source_networks = every[source].networks if source in every else ()
    loads = {
        name: load
        for name, load in rooms(hosts).items()
        if name != source and name not in excluded and load.host.state in PLACEABLE_STATES
    }
    moves: list[Move] = []
    unplaceable: list[Unplaceable] = []
    for guest in sorted(guests, key=lambda g: (-g.priority, -g.memory_mib, g.name)):
        reasons = {name: why for name, load in loads.items() if (why := why_not(guest, load, policy, source_networks))}
        must = guest.rules.hosts
        fits = [name for name in loads if name not in reasons and (not must or name in must)]
        regular = [n for n in fits if not loads[n].host.spare]
        candidates = regular or (fits if policy.use_spares else [])
        if not candidates:
            if must:
                blocked = _why_each(must, source, every, reasons, excluded, policy)
                reason = f"must run on {', '.join(must)}: {_summarise(blocked)}"
            elif not loads:
                reason = "no other host is up and out of maintenance"
            elif fits:
                reason = "only spare hosts have room and spares are not allowed"
            else:
                reason = "no host fits: " + _summarise(reasons)
            unplaceable.append(Unplaceable(guest.name, guest.memory_mib, reason))
            continue
        preferred = [n for n in candidates if n in guest.rules.prefer]
        pool = preferred or candidates
        chosen = choose(guest, sorted(pool)) if choose else None
        if chosen not in pool:
            chosen = _best(guest, pool, loads, policy)
            why = _why_chosen(guest, chosen, loads, preferred)
        else:
            why = "chosen by plugin" + (" among preferred hosts" if preferred else "")
        if must:
            why += f" within its hosts rule ({', '.join(must)})"
        if guest.rules.prefer and not preferred:
            missed = _why_each(guest.rules.prefer, source, every, reasons, excluded, policy)
            for name in guest.rules.prefer:
                if name not in missed:
                    outside = must and name not in must
                    missed[name] = "outside its hosts rule" if outside else "spare host, used only when no other fits"
            why += f"; no preferred host fits ({_summarise(missed)})"
        loads[chosen].take(guest)
        moves.append(Move.of(guest, source, chosen, f"{why}: {loads[chosen].free_memory(policy)} MiB left"))
    return moves, unplaceable


def _why_chosen(guest: Guest, chosen: str, loads: dict[str, Room], preferred: list[str]) -> str:
    together = set(guest.affinity) & loads[chosen].affinity
    if together:
        why = f"affinity group '{sorted(together)[0]}'"
        return f"preferred host, {why}" if preferred else why
    if len(preferred) == 1:
        return "preferred host"
    if preferred:
        return "preferred host with most free memory"
    return "most free memory" + (" (spare host)" if loads[chosen].host.spare else "")


def _best(guest: Guest, candidates: list[str], loads: dict[str, Room], policy: Policy) -> str:
    def score(name: str) -> tuple[int, int, str]:
        together = len(set(guest.affinity) & loads[name].affinity)
        return (-together, -loads[name].free_memory(policy), name)

    return min(candidates, key=score)


def plan_drain(
    hosts: Iterable[HostView], source: str, policy: Policy = Policy(), choose: Chooser | None = None
) -> Plan:
    """Move every running guest off ``source``; warn when the rest lose N+1 headroom."""
    hosts = list(hosts)
    by_name = {h.name: h for h in hosts}
    if source not in by_name:
        raise KeyError(source)
    running = [g for g in by_name[source].guests if g.state in ACTIVE]
    idle = tuple(g.name for g in by_name[source].guests if g.state not in ACTIVE)
    moves, unplaceable = place(running, source, hosts, policy, choose)
    warnings = []
    if unplaceable:
        warnings.append(f"{len(unplaceable)} guest(s) cannot be placed and will stay on {source}")
    after = _after(hosts, source, moves)
    if not _survives_one_failure(after, policy):
        warnings.append(f"N+1: after draining {source} the other hosts cannot absorb one more host failure")
    return Plan(source, tuple(moves), tuple(unplaceable), tuple(warnings), idle)


def _after(hosts: list[HostView], source: str, moves: list[Move]) -> list[HostView]:
    guests = {g.name: g for h in hosts for g in h.guests}
    out = []
    for host in hosts:
        if host.name == source or host.state not in PLACEABLE_STATES:
            continue
        arriving = tuple(replace(guests[m.guest], host=host.name) for m in moves if m.target == host.name)
        out.append(replace(host, guests=host.guests + arriving))
    return out


def _survives_one_failure(hosts: list[HostView], policy: Policy, heaviest: int = 3) -> bool:
    """Whether the guests of any one host would fit on the others (the N+1 rule).

    Only the most loaded hosts are tried: they are the binding cases, and trying every
    host would make planning quadratic in the fleet's size.
    """

    def running(host: HostView) -> list[Guest]:
        return [g for g in host.guests if g.state in ACTIVE]

    by_load = sorted(hosts, key=lambda h: -sum(g.memory_mib for g in running(h)))
    for failed in by_load[:heaviest]:
        guests = running(failed)
        if guests and place(guests, failed.name, hosts, policy)[1]:
            return False
    return True
