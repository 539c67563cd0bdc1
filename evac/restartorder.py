"""The order a dead host's guests come back in, and what each one waits for first.

vSphere HA restarts by priority and by "start B after A is ready"; evac does both. A
guest's ``after`` rule (its metadata, else its tags' rule: :mod:`evac.guestrules`) names
guests or tags; each of them counts as ready as *its own* ``ready`` says: its QEMU runs
(``started``), its QEMU guest agent answers (``agent``), or its address answers echoes
(``echo``). :func:`plan_order` turns that into the restart list, which is pure and
tested without libvirt; :func:`await_ready` is the wait one restart does before its start,
with the checks, the clock and the wait given to it.

The list is topological (a guest comes after everything it waits for in the same plan),
then by priority, highest first, then by memory, largest first. A guest others wait for
goes as early as the most important of them (it inherits their priority), so a
priority-10 web server never queues behind priority-0 batch guests for its database.
Items of a ``for_each`` step are taken in list order, so waiting restarts never hold every
slot while what they wait for has not started: nothing can deadlock.

Rules that cannot be honoured never leave a guest down: an ``after`` entry that matches
nothing, a dependency that is not restarted (not protected, unrecoverable) or does not run
anywhere, and a cycle made by guests' metadata are each a warning in the plan, and the
guests concerned start without that wait.
"""

from __future__ import annotations

import heapq
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .guestrules import GuestSettings, find_cycle, tags_of
from .model import ACTIVE, Guest, Readiness

DEFAULT_AFTER_TIMEOUT = 300.0  # vSphere's default: then the guest starts anyway
AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class Dependency:
    """A guest others wait for, and how they tell it is ready.

    ``host`` is where it runs now for one this plan does not restart; for one it restarts
    it is empty: that guest's own restart item says where it went."""

    guest: str
    ready: Readiness
    address: str | None = None
    host: str = ""

    @property
    def in_plan(self) -> bool:
        return not self.host

    def as_dict(self) -> dict[str, str]:
        return {"guest": self.guest, "ready": str(self.ready), "address": self.address or "", "host": self.host}

    @classmethod
    def of(cls, data: Mapping[str, object]) -> Dependency:
        """Back from :meth:`as_dict` (a plan's output, rendered into a restart's inputs)."""
        ready = str(data.get("ready") or Readiness.STARTED)
        return cls(
            guest=str(data["guest"]),
            ready=Readiness(ready) if ready in set(Readiness) else Readiness.STARTED,
            address=str(data.get("address") or "") or None,
            host=str(data.get("host") or ""),
        )


@dataclass(frozen=True)
class Ordered:
    """One guest's place in the restart: its wave (1: waits for nothing in the plan; n: after
    a guest of wave n-1) and the guests it waits for, in the plan or running elsewhere."""

    guest: str
    wave: int
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestartOrder:
    order: tuple[Ordered, ...]
    waits: Mapping[str, Dependency] = field(default_factory=dict)  # every guest some guest waits for
    warnings: tuple[str, ...] = ()

    def of(self, guest: str) -> Ordered:
        return next(o for o in self.order if o.guest == guest)


def after_source(guest: Guest, settings: GuestSettings) -> str:
    """Where a guest's ``after`` rule comes from, as an operator finds it: its metadata
    attribute, else the tag rule (``guests.tags.web.after``). Read from the guest as
    defined, before :func:`evac.guestrules.resolve` filled it in."""
    if guest.rules.after:
        return f'metadata after="{",".join(guest.rules.after)}"'
    for tag in tags_of(guest):
        rule = settings.tags.get(tag)
        if rule is not None and rule.rules.after:
            return f"guests.tags.{tag}.after"
    return "no after rule"


def has_agent_channel(xml: str) -> bool:
    """Whether a domain definition gives its guest a QEMU guest agent channel; without
    one, ``ready: agent`` can never be met."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return False
    return any(t.get("name") == AGENT_CHANNEL for t in root.iterfind("./devices/channel/target"))


def plan_order(
    restarting: Sequence[Guest],
    elsewhere: Sequence[Guest] = (),
    not_restarted: Mapping[str, tuple[Guest, str]] | None = None,
    sources: Mapping[str, str] | None = None,
    without_agent: Collection[str] = (),
) -> RestartOrder:
    """The restart list for ``restarting`` (guests with their rules resolved).

    ``elsewhere``: the guests of the other hosts (any state), which ``after`` entries may
    name too; ``not_restarted``: the dead host's guests this plan leaves down, by name, with
    why; ``sources``: where each guest's ``after`` rule comes from, for the cycle message
    (:func:`after_source`); ``without_agent``: guests whose definition has no guest agent
    channel."""
    skipped = dict(not_restarted or {})
    where = dict(sources or {})
    planned = {g.name: g for g in restarting}
    others = {g.name: g for g in elsewhere if g.name not in planned and g.name not in skipped}
    every = {**{n: g for n, (g, _) in skipped.items()}, **others, **planned}
    warnings: list[str] = []

    def note(text: str) -> None:
        if text not in warnings:
            warnings.append(text)

    inside: dict[str, set[str]] = {name: set() for name in planned}
    outside: dict[str, set[str]] = {name: set() for name in planned}
    for guest in restarting:
        for entry in guest.rules.after:
            for found in _matches(entry, guest, every, note):
                if found in planned:
                    inside[guest.name].add(found)
                elif found in skipped:
                    note(
                        f"{guest.name} waits for {found}, which is not restarted ({skipped[found][1]}): "
                        f"{guest.name} starts without waiting for it"
                    )
                elif others[found].state not in ACTIVE:
                    note(
                        f"{guest.name} waits for {found}, which does not run anywhere ({others[found].state} on "
                        f"{others[found].host}): {guest.name} starts without waiting for it"
                    )
                else:
                    outside[guest.name].add(found)

    while cycle := find_cycle(inside):
        members = sorted(set(cycle))
        path = " -> ".join(f"{n} [{where.get(n, 'after')}]" for n in cycle[:-1]) + f" -> {cycle[-1]}"
        note(
            f"restart order ignored for {', '.join(members)}: their after rules go round in a cycle ({path}); "
            "they restart without waiting"
        )
        for name in members:
            inside[name] = set()
            outside[name] = set()

    names = _topological(planned, inside)
    waves: dict[str, int] = {}
    for name in names:
        waves[name] = 1 + max((waves[d] for d in inside[name]), default=0)
    waited = {d for name in names for d in inside[name] | outside[name]}
    waits = {d: _dependency(every[d], d in planned, d in without_agent, note) for d in sorted(waited)}
    order = tuple(Ordered(n, waves[n], tuple(sorted(inside[n] | outside[n]))) for n in names)
    return RestartOrder(order, waits, tuple(warnings))


def _matches(entry: str, guest: Guest, every: Mapping[str, Guest], note: Callable[[str], None]) -> list[str]:
    """The guests one ``after`` entry names: a guest by that name, else every other guest
    with that tag."""
    if entry == guest.name:
        note(f"{guest.name}: after names the guest itself; ignored")
        return []
    if entry in every:
        return [entry]
    tagged = sorted(n for n, g in every.items() if n != guest.name and entry in tags_of(g))
    if not tagged:
        note(f"{guest.name}: after entry '{entry}' names no guest and no other guest's tag; ignored")
    return tagged


def _topological(planned: Mapping[str, Guest], inside: Mapping[str, set[str]]) -> list[str]:
    """Kahn's order over an acyclic ``inside``, the most important ready guest first."""
    waiting_for_me: dict[str, set[str]] = {name: set() for name in planned}
    for name, deps in inside.items():
        for dep in deps:
            waiting_for_me[dep].add(name)
    inherited: dict[str, int] = {}

    def priority(name: str) -> int:
        if name not in inherited:
            own = planned[name].priority
            inherited[name] = max([own, *(priority(w) for w in waiting_for_me[name])])
        return inherited[name]

    def key(name: str) -> tuple[int, int, str]:
        return (-priority(name), -planned[name].memory_mib, name)

    left = {name: len(deps) for name, deps in inside.items()}
    ready = [key(name) for name, count in left.items() if count == 0]
    heapq.heapify(ready)
    names: list[str] = []
    while ready:
        name = heapq.heappop(ready)[2]
        names.append(name)
        for later in waiting_for_me[name]:
            left[later] -= 1
            if left[later] == 0:
                heapq.heappush(ready, key(later))
    return names


def _dependency(guest: Guest, in_plan: bool, no_agent: bool, note: Callable[[str], None]) -> Dependency:
    """How those after ``guest`` tell it is ready; a readiness it cannot meet falls back to
    ``started``, with a warning (waiting 300 s for nothing helps nobody)."""
    ready = guest.rules.ready or Readiness.STARTED
    if ready is Readiness.ECHO and not guest.address:
        note(f"{guest.name}: ready=echo but it has no address metadata: those after it wait only until it runs")
        ready = Readiness.STARTED
    elif ready is Readiness.ECHO and guest.address and ":" in guest.address:
        note(f"{guest.name}: ready=echo checks IPv4 only ({guest.address}): those after it wait only until it runs")
        ready = Readiness.STARTED
    elif ready is Readiness.AGENT and no_agent:
        note(
            f"{guest.name}: ready=agent but its definition has no guest agent channel ({AGENT_CHANNEL}): "
            "those after it wait only until it runs"
        )
        ready = Readiness.STARTED
    return Dependency(guest.name, ready, guest.address, "" if in_plan else guest.host)


# ---------------------------------------------------------------- the wait before one restart
class Seen(StrEnum):
    """One look at a dependency."""

    READY = "ready"
    WAITING = "waiting"
    GONE = "gone"  # it will not become ready (its restart failed): stop waiting for it


@dataclass(frozen=True)
class Look:
    seen: Seen
    detail: str = ""


@dataclass(frozen=True)
class Waited:
    """What one restart's wait came to."""

    seconds: float
    ready: tuple[str, ...] = ()
    gone: Mapping[str, str] = field(default_factory=dict)  # not waited for any more, and why
    late: Mapping[str, str] = field(default_factory=dict)  # still not ready when the wait ran out

    @property
    def note(self) -> str:
        """One line for the restart's outputs and the report; empty when all were ready."""
        parts = [f"{d} not ready after {self.seconds:g} s ({why or 'no answer'})" for d, why in self.late.items()]
        parts += [f"{d}: {why}" for d, why in self.gone.items()]
        return "started without its dependencies ready: " + "; ".join(parts) if parts else ""


def await_ready(
    deps: Sequence[Dependency],
    check: Callable[[Dependency], Look],
    wait: Callable[[float], None],
    clock: Callable[[], float],
    timeout: float = DEFAULT_AFTER_TIMEOUT,
    interval: float = 0.25,
) -> Waited:
    """Look at each dependency until every one is ready or gone, or ``timeout`` seconds
    passed; ``wait(seconds)`` pauses between rounds (and raises to cancel)."""
    start = clock()
    pending = list(deps)
    ready: list[str] = []
    gone: dict[str, str] = {}
    last: dict[str, str] = {}
    while True:
        for dep in list(pending):
            look = check(dep)
            if look.seen is Seen.WAITING:
                last[dep.guest] = look.detail
                continue
            pending.remove(dep)
            if look.seen is Seen.READY:
                ready.append(dep.guest)
            else:
                gone[dep.guest] = look.detail
        left = timeout - (clock() - start)
        if not pending or left <= 0:
            break
        wait(min(interval, left))
    late = {dep.guest: last.get(dep.guest, "") for dep in pending}
    return Waited(round(clock() - start, 3), tuple(ready), gone, late)
