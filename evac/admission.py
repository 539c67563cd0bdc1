"""Admission control: how many host failures the fleet can absorb, and whether its reserve holds.

vSphere HA keeps room for failover (a number of hosts, or a percentage of the cluster's
resources) and refuses what would eat into it; Masakari keeps reserved hosts. evac keeps
``ha.reserve`` (hosts, default 1, or ``"25%"`` of the fleet's memory) and, with
``ha.admission: enforce``, refuses ``evac ha protect`` when the fleet could then no longer
restart every protected guest after losing that many hosts.

Everything here is a pure function of the placement view (:class:`~evac.placement.HostView`
with resolved guest rules): what would have to restart is asked of
:func:`evac.placement.place`, the planner the failover itself uses, so ``hosts`` rules,
anti-affinity, bridges and each host's headroom count exactly as they will on the day.

Losing every combination of hosts is exponential, so only the worst ones are tried: hosts
ordered by the protected memory they would leave to restart (largest first), and for ``k``
failures every set of ``k`` among as many of those as keep the sets at
:data:`MAX_COMBINATIONS`. Beyond :data:`LINEAR` failures the claim is searched with the
heaviest hosts only (doubling, then halving) and then checked on its own window, so a fleet
of a hundred hosts costs a few hundred placements, not millions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import combinations
from math import comb

from .model import ACTIVE, Guest
from .placement import PLACEABLE_STATES, HostView, Move, Policy, place
from .states import HostMode

CANDIDATE_STATES = (*PLACEABLE_STATES, HostMode.MAINTENANCE)  # hosts that can still fail
MAX_COMBINATIONS = 20  # sets of k lost hosts tried for one k
LINEAR = 3  # up to this many failures, every k is tried on its own window
DEFAULT_POLICY = Policy()  # the failover's own (``vm.plan_restart`` without params)


class AdmissionMode(StrEnum):
    """``ha.admission``: what ``evac ha protect`` does when the reserve would break."""

    WARN = "warn"  # protect, and say so
    ENFORCE = "enforce"  # refuse, and change nothing


@dataclass(frozen=True)
class Reserve:
    """``ha.reserve``: host failures the fleet must absorb, or (``percent``) the share of
    the fleet's memory kept free."""

    hosts: int = 1
    percent: float | None = None

    def __str__(self) -> str:
        return f"{self.percent:g}% of memory" if self.percent is not None else count(self.hosts, "host")


# ---------------------------------------------------------------- what losing hosts leaves
@dataclass(frozen=True)
class Shortfall:
    """Hosts lost, and a protected guest of theirs nothing else can take, with why."""

    lost: tuple[str, ...]
    guest: str
    memory_mib: int
    reason: str  # the planner's, with the lost hosts called lost

    def __str__(self) -> str:
        room = "room" if "memory:" in self.reason else "a host"
        return f"losing {names(self.lost)} leaves {self.guest} ({self.memory_mib} MiB) without {room}: {self.reason}"


def protected(guest: Guest) -> bool:
    """Whether evac restarts the guest after a host failure; unresolved counts as the
    default of ``guests.protect`` (true)."""
    return guest.rules.protected is not False


def restartable(host: HostView) -> list[Guest]:
    """The host's guests a failover would restart elsewhere: protected, running, and
    without local disks (those die with the host)."""
    return [g for g in host.guests if g.state in ACTIVE and protected(g) and not g.local_disks]


def protected_load(host: HostView) -> int:
    return sum(g.memory_mib for g in restartable(host))


def candidates(hosts: Iterable[HostView]) -> list[HostView]:
    """The hosts that can fail, worst first: the most protected memory to restart, then the
    most room lost with them, then by name."""
    found = [h for h in hosts if h.state in CANDIDATE_STATES]
    return sorted(found, key=lambda h: (-protected_load(h), -h.memory_mib, h.name))


def lose(hosts: Sequence[HostView], lost: Sequence[str], policy: Policy) -> Shortfall | None:
    """Restart the lost hosts' protected guests on the rest, one lost host after another
    as separate failovers would, each seeing where the ones before placed theirs; the
    first guest left without a host, or None when all fit."""
    views = list(hosts)
    by_name = {h.name: h for h in views}
    for source in lost:
        guests = restartable(by_name[source])
        if not guests:
            continue
        moves, stuck = place(guests, source, views, policy, exclude=lost)
        if stuck:
            return Shortfall(tuple(lost), stuck[0].guest, stuck[0].memory_mib, _as_lost(stuck[0].reason))
        views = _arrive(views, guests, moves)
    return None


def _as_lost(reason: str) -> str:
    reason = reason.removeprefix("no host fits: ")
    return reason.replace(": the host it leaves", ": lost").replace(": excluded", ": lost")


def _arrive(views: list[HostView], guests: list[Guest], moves: list[Move]) -> list[HostView]:
    by_name = {g.name: g for g in guests}
    arriving: dict[str, list[Guest]] = {}
    for move in moves:
        arriving.setdefault(move.target, []).append(replace(by_name[move.guest], host=move.target))
    return [replace(v, guests=v.guests + tuple(arriving[v.name])) if v.name in arriving else v for v in views]


def window(ordered: Sequence[HostView], k: int) -> tuple[str, ...]:
    """The worst hosts tried for ``k`` failures: as many as keep the sets of ``k`` among them
    at :data:`MAX_COMBINATIONS` (at least ``k``)."""
    size = k
    while size < len(ordered) and comb(size + 1, k) <= MAX_COMBINATIONS:
        size += 1
    return tuple(h.name for h in ordered[: min(size, len(ordered))])


def survive(hosts: Sequence[HostView], k: int, policy: Policy) -> Shortfall | None:
    """Whether the fleet restarts every protected guest after losing any ``k`` of the worst
    hosts (:func:`window`); the first shortfall found, heaviest sets first."""
    if k <= 0:
        return None
    ordered = candidates(hosts)
    if k > len(ordered):
        k = len(ordered)
    for lost in combinations(window(ordered, k), k):
        found = lose(hosts, lost, policy)
        if found:
            return found
    return None


# ---------------------------------------------------------------- capacity
@dataclass(frozen=True)
class CapacityReport:
    """What ``evac ha capacity`` says: host failures absorbed, why not one more, and the
    memory kept free."""

    absorbs: int  # host failures the fleet restarts every protected guest after
    hosts: int  # hosts counted (up, or in maintenance)
    worst: tuple[str, ...]  # the hosts whose every set of ``absorbs`` was tried, worst first
    shortfall: Shortfall | None  # why not one more failure; None: there is nothing to restart
    protected: int  # protected guests a failover would restart
    protected_mib: int
    unprotected: int  # running guests not protected
    free_mib: int  # room placement may use on hosts up
    total_mib: int  # the memory of hosts up
    not_counted: tuple[tuple[str, str], ...] = ()  # hosts neither up nor in maintenance, and their state
    stays_down: tuple[str, ...] = ()  # protected guests with local disks: they die with their host
    loads: tuple[tuple[str, int, int], ...] = field(default_factory=tuple)  # host, protected MiB, free MiB

    @property
    def free_pct(self) -> float:
        return 100.0 * self.free_mib / self.total_mib if self.total_mib else 0.0

    def summary(self) -> str:
        """One line: ``1 host failure: any one host's protected guests fit on the others; not
        2: losing host1 and host2 leaves web-3 (2048 MiB) without room: host3: memory: ...``."""
        if self.shortfall is None:
            return f"any number of host failures: no protected guest runs on the {count(self.hosts, 'host')} counted"
        k = self.absorbs
        if k == 0:
            return f"0 host failures: {self.shortfall}"
        some = "one" if k == 1 else str(k)
        whose = "host's" if k == 1 else "hosts'"
        if len(self.worst) >= self.hosts:
            scope = f"any {some} {whose}"
        elif len(self.worst) == k:
            scope = f"the {k} most loaded hosts'"
        else:
            scope = f"any {some} of the {len(self.worst)} most loaded hosts'"
        return f"{count(k, 'host failure')}: {scope} protected guests fit on the others; not {k + 1}: {self.shortfall}"


def capacity(hosts: Iterable[HostView], policy: Policy = DEFAULT_POLICY) -> CapacityReport:
    """How many host failures the fleet absorbs today, worst hosts first (see the module)."""
    views = list(hosts)
    ordered = candidates(views)
    n = len(ordered)
    claimed, why = _search(views, ordered, policy)
    up = [h for h in views if h.state in PLACEABLE_STATES]
    free = {h.name: max(0, h.memory_capacity(policy) - _running_mib(h)) for h in up}
    running = [g for h in ordered for g in h.guests if g.state in ACTIVE]
    return CapacityReport(
        absorbs=claimed,
        hosts=n,
        worst=window(ordered, claimed) if claimed else (),
        shortfall=why,
        protected=sum(len(restartable(h)) for h in ordered),
        protected_mib=sum(protected_load(h) for h in ordered),
        unprotected=sum(1 for g in running if not protected(g)),
        free_mib=sum(free.values()),
        total_mib=sum(h.memory_mib for h in up),
        not_counted=tuple((h.name, str(h.state)) for h in views if h.state not in CANDIDATE_STATES),
        stays_down=tuple(sorted(g.name for g in running if protected(g) and g.local_disks)),
        loads=tuple((h.name, protected_load(h), free.get(h.name, 0)) for h in ordered),
    )


def _running_mib(host: HostView) -> int:
    return sum(g.memory_mib for g in host.guests if g.state in ACTIVE)


def _search(views: list[HostView], ordered: list[HostView], policy: Policy) -> tuple[int, Shortfall | None]:
    """The failures claimed and why not one more: every ``k`` up to :data:`LINEAR` on its
    window; beyond, the heaviest ``k`` hosts found by doubling then halving, and the claim
    checked on its own window (stepping down while that fails)."""
    n = len(ordered)
    if not any(restartable(h) for h in ordered):
        return n, None
    for k in range(1, min(LINEAR, n) + 1):
        found = survive(views, k, policy)
        if found:
            return k - 1, found
    if n <= LINEAR:
        return n, None
    heaviest = [h.name for h in ordered]
    holds, fails, why = LINEAR, n, None
    k = LINEAR * 2
    while k < n:
        why = lose(views, heaviest[:k], policy)
        if why:
            fails = k
            break
        holds, k = k, k * 2
    if why is None:
        why = lose(views, heaviest, policy)
        if why is None:  # only if nothing is left to restart: losing every host leaves no target
            return n, None
    while fails - holds > 1:
        k = (holds + fails) // 2
        found = lose(views, heaviest[:k], policy)
        if found:
            fails, why = k, found
        else:
            holds = k
    while holds > LINEAR:
        found = survive(views, holds, policy)
        if found is None:
            break
        why = found
        holds -= 1
    return holds, why


# ---------------------------------------------------------------- the reserve
@dataclass(frozen=True)
class Verdict:
    """Whether the reserve holds on this fleet, and the capacity behind the answer."""

    reserve: Reserve
    report: CapacityReport
    shortfall: Shortfall | None = None  # a host reserve's: what losing that many hosts leaves

    @property
    def holds(self) -> bool:
        if self.reserve.percent is not None:
            return self.report.free_pct >= self.reserve.percent
        return self.shortfall is None

    @property
    def why(self) -> str:
        """One line: ``reserve 1 host broken: losing host1 leaves web-3 (2048 MiB) without room: ...``."""
        state = "holds" if self.holds else "broken"
        if self.reserve.percent is not None:
            r = self.report
            return (
                f"reserve {self.reserve} {state}: {r.free_pct:.1f}% of the fleet's memory free "
                f"({r.free_mib} of {r.total_mib} MiB)"
            )
        if self.shortfall is not None:
            return f"reserve {self.reserve} {state}: {self.shortfall}"
        return f"reserve {self.reserve} {state}: {self.report.summary()}"


def check(hosts: Iterable[HostView], reserve: Reserve, policy: Policy = DEFAULT_POLICY) -> Verdict:
    """The reserve on this fleet: a host reserve is tried for exactly its number of hosts
    (its own window), a percent reserve against the memory placement may still use."""
    views = list(hosts)
    report = capacity(views, policy)
    shortfall = survive(views, reserve.hosts, policy) if reserve.percent is None else None
    return Verdict(reserve, report, shortfall)


@dataclass(frozen=True)
class Admission:
    """What protecting one guest does to the reserve."""

    guest: str
    before: Verdict
    after: Verdict
    note: str = ""  # why the load the reserve covers does not change, when it does not

    @property
    def changes(self) -> bool:
        return not self.note

    @property
    def breaks(self) -> bool:
        """Whether the reserve does not hold after the change this protection makes."""
        return self.changes and not self.after.holds

    def why(self) -> str:
        if not self.breaks:
            return self.after.why
        if self.before.holds:
            return f"protecting {self.guest} would break the reserve: {self.after.why}"
        return f"the reserve is broken already and protecting {self.guest} keeps it so: {self.after.why}"


def admit(hosts: Iterable[HostView], guest: str, reserve: Reserve, policy: Policy = DEFAULT_POLICY) -> Admission:
    """The reserve before and after ``guest`` is protected. A guest already protected, not
    running, or with local disks changes nothing the reserve covers (``note`` says which).
    ``KeyError`` when no host runs or defines the guest."""
    views = list(hosts)
    found = next((g for h in views for g in h.guests if g.name == guest), None)
    if found is None:
        raise KeyError(guest)
    before = check(views, reserve, policy)
    note = ""
    if protected(found):
        note = "protected already"
    elif found.state not in ACTIVE:
        note = f"{found.state}: counted once it runs"
    elif found.local_disks:
        note = "local disks: a failover cannot restart it elsewhere"
    if note:
        return Admission(guest, before, before, note)
    after = check(set_protected(views, guest, True), reserve, policy)
    return Admission(guest, before, after)


def set_protected(hosts: Iterable[HostView], guest: str, on: bool) -> list[HostView]:
    """The fleet with one guest's HA membership changed (everywhere it is defined)."""
    out = []
    for host in hosts:
        if any(g.name == guest for g in host.guests):
            changed = tuple(
                replace(g, rules=replace(g.rules, protected=on)) if g.name == guest else g for g in host.guests
            )
            host = replace(host, guests=changed)
        out.append(host)
    return out


# ---------------------------------------------------------------- words
def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def names(items: Sequence[str], most: int = 5) -> str:
    """``host1``, ``host1 and host2``, ``host1, host2 and host3``; beyond ``most`` names,
    ``12 hosts (host1, host2, host3, ...)`` so the line stays one line."""
    if len(items) > most:
        return f"{len(items)} hosts ({', '.join(items[:3])}, ...)"
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
