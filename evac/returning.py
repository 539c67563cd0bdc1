"""Bringing guests back to a host after its maintenance (Proxmox's bug 4371): a pure plan.

A drain's journal remembers where each guest went: its ``vm.live_migrate`` items, with
their source and target. :func:`origins` reads those records (:class:`PastJob`, built by
the ``returning`` plugin) and :func:`plan_return` decides, from a live snapshot of the
fleet, which of the guests go back and why the others do not. It never talks to libvirt,
so the dry run, the Slack preview and the engine all run this one plan.

Which drain counts: the most recent drain of the host (not a dry run; a failed or partial
drain counts for the guests it did move). A drain that began with the host already in
maintenance (``evac evacuate --force``) continues the drain before it, so that one counts
too, and so on back; a return job of the host ends a maintenance. Guests that a return
job already brought back after their drain are not returned twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from .model import Guest
from .placement import PLACEABLE_STATES, HostView, Move, Policy, place
from .states import Health, HostMode

RUNBOOK = "maintenance-return"  # the shipped runbook: ``evac host enable HOST --return`` runs it
LIVE = ("running",)  # what a live migration can move; a paused guest is left where it is


class JobKind(StrEnum):
    DRAIN = "drain"
    RETURN = "return"


@dataclass(frozen=True)
class Moved:
    """One guest a past job live-migrated (a succeeded ``vm.live_migrate`` item)."""

    guest: str
    source: str
    target: str


@dataclass(frozen=True)
class PastJob:
    """A drain or a return of the host, as the journal recorded it. ``continues``: a drain
    that began with the host already in maintenance, so part of the maintenance before it."""

    id: int
    kind: JobKind
    moved: tuple[Moved, ...] = ()
    continues: bool = False


@dataclass(frozen=True)
class Origin:
    """A guest a drain took off the host: where it went, and which job returned it, if any."""

    guest: str
    drained_to: str
    drain: int
    returned_by: int | None = None


@dataclass(frozen=True)
class Skipped:
    guest: str
    reason: str


@dataclass(frozen=True)
class ReturnPlan:
    host: str
    drains: tuple[int, ...] = ()  # the drain jobs whose guests come back, oldest first
    moves: tuple[Move, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """Plain data, as the journal keeps it (lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def origins(host: str, history: Iterable[PastJob]) -> tuple[tuple[int, ...], dict[str, Origin]]:
    """The drains of ``host`` that count (oldest first) and each guest they took off it."""
    newest_first = sorted(history, key=lambda j: -j.id)
    chain: list[PastJob] = []
    for job in newest_first:
        if job.kind is JobKind.RETURN:
            if chain:
                break  # a return before this maintenance: older drains are over
            continue
        if chain and not chain[-1].continues:
            break
        chain.append(job)
    found: dict[str, Origin] = {}
    for drain in reversed(chain):
        for m in drain.moved:
            if m.source == host:
                found[m.guest] = Origin(m.guest, m.target, drain.id)
    for job in sorted(newest_first, key=lambda j: j.id):
        if job.kind is not JobKind.RETURN:
            continue
        for m in job.moved:
            origin = found.get(m.guest)
            if m.target == host and origin is not None and job.id > origin.drain:
                found[m.guest] = replace(origin, returned_by=job.id)
    return tuple(j.id for j in reversed(chain)), found


def plan_return(
    host: str,
    drains: tuple[int, ...],
    found: Mapping[str, Origin],
    hosts: Iterable[HostView],
    policy: Policy,
) -> ReturnPlan:
    """Move each guest a drain took off ``host`` back to it, if it is still running where
    the drain put it and ``host`` has room for it under its rules; every other guest is
    skipped with the reason. ``host`` in maintenance is planned as enabled: a return
    enables it first."""
    views = [_enabled(v) if v.name == host else v for v in hosts]
    by_name = {v.name: v for v in views}
    if host not in by_name:
        raise KeyError(host)
    where: dict[str, list[Guest]] = {}
    for view in views:
        for copy in view.guests:
            where.setdefault(copy.name, []).append(copy)
    unread = sorted(v.name for v in views if v.state not in (*PLACEABLE_STATES, HostMode.MAINTENANCE))
    skipped: list[Skipped] = []
    going: list[tuple[Guest, Origin]] = []
    for name in sorted(found):
        guest, why = _candidate(host, found[name], where.get(name, []), unread)
        if guest is None:
            skipped.append(Skipped(name, why))
        else:
            going.append((guest, found[name]))
    moves, stuck = _fit(by_name[host], [v for v in views if v.name != host], going, policy)
    order = {name: i for i, name in enumerate(sorted(found))}
    warnings = () if drains else (f"no drain of {host} in the journal: nothing to return",)
    return ReturnPlan(host, drains, moves, tuple(sorted([*skipped, *stuck], key=lambda s: order[s.guest])), warnings)


def _fit(
    target: HostView, others: list[HostView], going: list[tuple[Guest, Origin]], policy: Policy
) -> tuple[tuple[Move, ...], list[Skipped]]:
    """Placement restricted to ``target``, one guest at a time, most important and largest
    first, each taking its room before the next is tried."""
    if target.state not in PLACEABLE_STATES:
        return (), [Skipped(g.name, f"{target.name} is {target.state}") for g, _ in going]
    moves: list[Move] = []
    stuck: list[Skipped] = []
    excluded = [v.name for v in others]
    for guest, origin in sorted(going, key=lambda p: (-p[0].priority, -p[0].memory_mib, p[0].name)):
        placed, refused = place([guest], guest.host, [target, *others], policy, exclude=excluded)
        if refused:
            stuck.append(Skipped(guest.name, "does not fit on " + refused[0].reason.removeprefix("no host fits: ")))
            continue
        room = placed[0].reason.rsplit(": ", 1)[-1]
        moves.append(replace(placed[0], reason=f"drained by job {origin.drain}; {room}"))
        target = replace(target, guests=(*target.guests, replace(guest, host=target.name)))
    return tuple(moves), stuck


def _enabled(view: HostView) -> HostView:
    return replace(view, state=Health.UP) if view.state == HostMode.MAINTENANCE else view


def _candidate(host: str, origin: Origin, copies: list[Guest], unread: list[str]) -> tuple[Guest | None, str]:
    """The guest to move back, or None and why not."""
    if origin.returned_by is not None:
        return None, f"returned by job {origin.returned_by}"
    if not copies:
        if unread:
            return None, f"not found on any host that answers ({', '.join(unread)} did not)"
        return None, "no longer defined on any host"
    running = [g for g in copies if g.state in LIVE]
    guest = running[0] if running else copies[0]
    if len(running) > 1:
        return None, f"running on {' and '.join(sorted(g.host for g in running))}"
    if guest.host == host:
        return None, f"already on {host}"
    if guest.host != origin.drained_to:
        return None, f"moved to {guest.host} since the drain"
    if guest.state not in LIVE:
        return None, f"not running ({guest.state})"
    if guest.rules.hosts and host not in guest.rules.hosts:
        return None, f"its rules keep it off {host} (hosts: {', '.join(guest.rules.hosts)})"
    return guest, ""
