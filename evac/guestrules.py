"""Rules for guests by tag: where they may run, in what order they come back, and whether
evac restarts them after a host failure at all.

The ``guests:`` section of evac.yaml gives them per tag; a guest's own metadata wins
(:class:`~evac.model.GuestRules`)::

    guests:
      protect: true            # HA membership of a guest nothing else marks
      tags:
        db:  {priority: 10, hosts: [host1, host2], prefer: [host1], ready: echo}
        web: {after: [db], protect: true}

    <evac:guest tags="web" hosts="host2,host3" after="db" ready="started" ha-protected="no"/>

:func:`resolve` is the one place the two meet, so the drain's planner, the failover's
restart order, rebalancing and admission control all read the same answer. A guest with
several tags takes each rule from the first of its tags that sets it. An ``after`` cycle
among the tags is refused here, with the file and line; one made by guests' metadata is
the restart plan's to report (:func:`find_cycle`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field, replace
from typing import Any

from .model import Guest, GuestRules, Readiness
from .yamldoc import Mapping, Where, section_mapping, shown

SECTION_KEYS = ("protect", "tags")
TAG_KEYS = ("priority", "hosts", "prefer", "after", "ready", "protect")


@dataclass(frozen=True)
class TagRules:
    """One entry of ``guests.tags`` (None or empty: not set by this tag)."""

    priority: int | None = None
    rules: GuestRules = GuestRules()


@dataclass(frozen=True)
class GuestSettings:
    """The ``guests:`` section; without one, every guest is protected and free to go anywhere."""

    protect: bool = True
    tags: dict[str, TagRules] = field(default_factory=dict)

    @classmethod
    def of(cls, sections: AbcMapping[str, Any]) -> GuestSettings:
        """The parsed section among a config's plugin sections, else the defaults."""
        found = sections.get("guests")
        return found if isinstance(found, GuestSettings) else cls()


def tags_of(guest: Guest) -> tuple[str, ...]:
    """The tags rules match: the ``tags`` metadata, then ``ha-tags``."""
    return tuple(dict.fromkeys((*guest.tags, *guest.ha.tags)))


def resolve(guest: Guest, settings: GuestSettings) -> Guest:
    """The guest with every rule filled in: its metadata, else its first tag that sets the
    rule, else the default (ready when started; protected as ``guests.protect`` says). A
    priority of 0 in the metadata counts as not set."""
    found = [settings.tags[t] for t in tags_of(guest) if t in settings.tags]

    def first(get: Callable[[TagRules], Any], own: Any) -> Any:
        if own not in (None, ()):
            return own
        return next((v for v in map(get, found) if v not in (None, ())), own)

    own = guest.rules
    protected = first(lambda t: t.rules.protected, own.protected)
    rules = GuestRules(
        hosts=first(lambda t: t.rules.hosts, own.hosts),
        prefer=first(lambda t: t.rules.prefer, own.prefer),
        after=first(lambda t: t.rules.after, own.after),
        ready=first(lambda t: t.rules.ready, own.ready) or Readiness.STARTED,
        protected=settings.protect if protected is None else protected,
    )
    priority = guest.priority or first(lambda t: t.priority, None) or 0
    return replace(guest, priority=priority, rules=rules)


def resolve_all(guests: Iterable[Guest], settings: GuestSettings) -> tuple[Guest, ...]:
    return tuple(resolve(g, settings) for g in guests)


def find_cycle(edges: AbcMapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in ``after`` edges (node -> what it comes after), as the nodes around it
    with the first repeated at the end (``["a", "b", "a"]``), else None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in on_path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        on_path.add(node)
        for before in edges.get(node, ()):
            cycle = visit(before)
            if cycle:
                return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(edges):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


# ---------------------------------------------------------------- parsing
def parse_guests(data: Any, source: str) -> GuestSettings:
    """The ``guests:`` section of evac.yaml (registered through ``evac_config_sections``)."""
    where = Where(source)
    section = section_mapping(data, source, "guests")
    where.reject_unknown(section, SECTION_KEYS, "guests.")
    protect = _flag(where, section, "protect", "guests.protect")
    tags = where.require_mapping(section.get("tags", Mapping()), section.line_of("tags"), "guests.tags")
    rules: dict[str, TagRules] = {}
    for tag, raw in tags.items():
        label = f"guests.tags.{tag}"
        if not isinstance(tag, str) or not tag or "," in tag or tag != tag.strip():
            raise where.error(tags.line_of(tag), label, "expected a tag as guests name it in their tags (no commas)")
        entry = where.require_mapping(raw, tags.line_of(tag), label)
        where.reject_unknown(entry, TAG_KEYS, f"{label}.")
        rules[tag] = _tag(where, entry, label)
    cycle = find_cycle({tag: rule.rules.after for tag, rule in rules.items()})
    if cycle:
        found = tags.get(cycle[0])
        line = found.line_of("after") if isinstance(found, Mapping) else tags.line_of(cycle[0])
        raise where.error(
            line, f"guests.tags.{cycle[0]}.after", f"restart order goes round in a cycle: {' -> '.join(cycle)}"
        )
    return GuestSettings(protect=True if protect is None else protect, tags=rules)


def _tag(where: Where, entry: Mapping, label: str) -> TagRules:
    priority = entry.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise where.error(
            entry.line_of("priority"), f"{label}.priority", f"expected a whole number, got {shown(priority)}"
        )
    ready = entry.get("ready")
    if ready is not None and ready not in set(Readiness):
        raise where.error(
            entry.line_of("ready"), f"{label}.ready", f"expected one of {', '.join(Readiness)}, got {shown(ready)}"
        )
    return TagRules(
        priority=priority,
        rules=GuestRules(
            hosts=_names(where, entry, "hosts", label),
            prefer=_names(where, entry, "prefer", label),
            after=_names(where, entry, "after", label),
            ready=Readiness(ready) if ready is not None else None,
            protected=_flag(where, entry, "protect", f"{label}.protect"),
        ),
    )


def _names(where: Where, entry: Mapping, key: str, label: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.error(entry.line_of(key), f"{label}.{key}", f"expected a list of names, got {shown(value)}")
    return tuple(v.strip() for v in value)


def _flag(where: Where, entry: Mapping, key: str, label: str) -> bool | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, bool):
        raise where.error(entry.line_of(key), label, f"expected true or false, got {shown(value)}")
    return value
