"""What to do about a guest whose QEMU died on a live host: restart, relocate, or give up.

Proxmox HA's rule: up to ``max_restart`` restarts on the guest's own host within
``window`` seconds, then up to ``max_relocate`` relocations to another host, then the
guest is left stopped and a person is alerted, because a guest that keeps dying is not
cured by starting it once more. :func:`decide` is a pure function of the policy, the
guest's earlier recoveries and the clock, so it is tested without libvirt or a journal.

The limits come from the ``ha:`` section of evac.yaml (defaults, and overrides per tag)
and from the guest's own metadata, which wins::

    ha: {max_restart: 1, max_relocate: 1, window: 3600, runbook: guest-failure,
         tags: {web: {max_restart: 3}}, admission: enforce, reserve: 1}

    <evac:guest ha-max-restart="2" ha-max-relocate="1" ha-window="600" ha-tags="web,db"/>

A guest with several tags takes each setting from the first of its tags that sets it.

``admission`` (``warn`` or ``enforce``) and ``reserve`` (host failures the fleet must
absorb, or ``"25%"`` of its memory kept free) are admission control's
(:mod:`evac.admission`): they are read here because they belong to the same section.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .admission import AdmissionMode, Reserve
from .errors import ConfigError
from .model import Guest
from .yamldoc import Mapping, Where, seconds, section_mapping, shown

DEFAULT_RUNBOOK = "guest-failure"
# The window is read back from the journal's jobs on every report, so it is bounded like
# a runbook's timeouts: at most a week.
MAX_WINDOW = 7 * 24 * 3600.0
LIMITS = ("max_restart", "max_relocate", "window")
HA_KEYS = (*LIMITS, "runbook", "tags", "admission", "reserve")
MAX_RESERVE_HOSTS = 1000
TAG_KEYS = (*LIMITS, "runbook")


class Recovery(StrEnum):
    """What the policy decided; a guest-failure job's ``action`` param is one of the first two."""

    RESTART = "restart"
    RELOCATE = "relocate"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class RestartPolicy:
    max_restart: int = 1
    max_relocate: int = 1
    window: float = 3600.0  # seconds


@dataclass(frozen=True)
class Attempt:
    """An earlier recovery of the guest: when it started (epoch seconds) and what it did.
    A recovery that failed counts too: it was a try."""

    at: float
    action: Recovery


@dataclass(frozen=True)
class Decision:
    action: Recovery
    reason: str  # counts what was used: "restart 2 of 2 within 1 h"


def decide(policy: RestartPolicy, attempts: Iterable[Attempt], now: float) -> Decision:
    """Restart while restarts are left in the window, then relocate while relocations are
    left, then give up. Attempts older than the window are forgotten."""
    recent = [a for a in attempts if a.at > now - policy.window]
    restarts = sum(1 for a in recent if a.action is Recovery.RESTART)
    relocations = sum(1 for a in recent if a.action is Recovery.RELOCATE)
    within = f"within {duration(policy.window)}"
    if restarts < policy.max_restart:
        return Decision(Recovery.RESTART, f"restart {restarts + 1} of {policy.max_restart} {within}")
    if relocations < policy.max_relocate:
        after = f", after {count(restarts, 'restart')}" if restarts else ""
        return Decision(Recovery.RELOCATE, f"relocation {relocations + 1} of {policy.max_relocate} {within}{after}")
    return Decision(
        Recovery.GIVE_UP,
        f"{count(restarts, 'restart')} and {count(relocations, 'relocation')} {within} already "
        f"(max_restart {policy.max_restart}, max_relocate {policy.max_relocate})",
    )


def duration(seconds: float) -> str:
    """``3600`` reads ``1 h``, ``600`` reads ``10 min``, ``90`` reads ``90 s``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# ---------------------------------------------------------------- settings
@dataclass(frozen=True)
class TagRule:
    """One entry of ``ha.tags``: what it sets for guests with that tag (None: not set)."""

    max_restart: int | None = None
    max_relocate: int | None = None
    window: float | None = None
    runbook: str | None = None


@dataclass(frozen=True)
class HaSettings:
    """The ``ha:`` section of evac.yaml; without one, these defaults."""

    policy: RestartPolicy = RestartPolicy()
    runbook: str = DEFAULT_RUNBOOK
    tags: dict[str, TagRule] = field(default_factory=dict)
    admission: AdmissionMode = AdmissionMode.WARN
    reserve: Reserve = field(default_factory=Reserve)

    @classmethod
    def of(cls, sections: AbcMapping[str, Any]) -> HaSettings:
        """The parsed section among a config's plugin sections, else the defaults."""
        found = sections.get("ha")
        return found if isinstance(found, HaSettings) else cls()

    def runbooks(self) -> frozenset[str]:
        """Every runbook a guest-failure job may run: the default and the tags' own."""
        return frozenset({self.runbook, *(rule.runbook for rule in self.tags.values() if rule.runbook)})

    def for_guest(self, guest: Guest) -> tuple[RestartPolicy, str]:
        """The guest's policy and runbook: its metadata over its tags over the defaults.
        ``ConfigError`` naming the guest and the attribute when its metadata is not valid."""
        rules = [self.tags[t] for t in guest.ha.tags if t in self.tags]

        def first(name: str, default: Any) -> Any:
            return next((getattr(r, name) for r in rules if getattr(r, name) is not None), default)

        own = guest_limits(guest)
        policy = RestartPolicy(
            max_restart=own.get("max_restart", first("max_restart", self.policy.max_restart)),
            max_relocate=own.get("max_relocate", first("max_relocate", self.policy.max_relocate)),
            window=own.get("window", first("window", self.policy.window)),
        )
        return policy, first("runbook", self.runbook)


def guest_limits(guest: Guest) -> dict[str, Any]:
    """The limits a guest's own metadata sets, checked: a one-line error names the guest,
    its host and the attribute."""
    found: dict[str, Any] = {}
    for name in LIMITS:
        text = getattr(guest.ha, name)
        if text is None:
            continue
        attribute = "ha-" + name.replace("_", "-")
        try:
            found[name] = _window(_number(text)) if name == "window" else _whole(_number(text))
        except ValueError as exc:
            raise ConfigError(f"guest {guest.name} on {guest.host}: metadata {attribute}: {exc}") from None
    return found


def _number(text: str) -> int | float | str:
    """Metadata text as the number it spells (``"2"``, ``"600"``, ``"1.5"``), else unchanged."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _whole(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {shown(value)}")
    return value


def _window(value: Any) -> float:
    return seconds(value, MAX_WINDOW, " (a week)")


def parse_ha(data: Any, source: str) -> HaSettings:
    """The ``ha:`` section of evac.yaml (registered through ``evac_config_sections``)."""
    where = Where(source)
    section = section_mapping(data, source, "ha")
    where.reject_unknown(section, HA_KEYS, "ha.")
    top = _rule(where, section, "ha")
    tags = where.require_mapping(section.get("tags", Mapping()), section.line_of("tags"), "ha.tags")
    rules: dict[str, TagRule] = {}
    for tag, raw in tags.items():
        label = f"ha.tags.{tag}"
        if not tag or "," in tag or tag != tag.strip():
            raise where.error(tags.line_of(tag), label, "expected a tag as guests name it in ha-tags (no commas)")
        entry = where.require_mapping(raw, tags.line_of(tag), label)
        where.reject_unknown(entry, TAG_KEYS, f"{label}.")
        rules[tag] = _rule(where, entry, label)
    defaults = RestartPolicy()
    return HaSettings(
        policy=RestartPolicy(
            max_restart=top.max_restart if top.max_restart is not None else defaults.max_restart,
            max_relocate=top.max_relocate if top.max_relocate is not None else defaults.max_relocate,
            window=top.window if top.window is not None else defaults.window,
        ),
        runbook=top.runbook or DEFAULT_RUNBOOK,
        tags=rules,
        admission=_admission(where, section),
        reserve=_reserve(where, section),
    )


def _admission(where: Where, section: Mapping) -> AdmissionMode:
    value = section.get("admission", AdmissionMode.WARN)
    if not isinstance(value, str) or value not in tuple(AdmissionMode):
        raise where.error(section.line_of("admission"), "ha.admission", f"expected warn or enforce, got {shown(value)}")
    return AdmissionMode(value)


def _reserve(where: Where, section: Mapping) -> Reserve:
    """``reserve: 2`` (host failures) or ``reserve: "25%"`` (of the fleet's memory kept free)."""
    value = section.get("reserve", 1)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RESERVE_HOSTS:
        return Reserve(hosts=value)
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            percent = -1.0
        if 0 < percent < 100:
            return Reserve(percent=percent)
    raise where.error(
        section.line_of("reserve"),
        "ha.reserve",
        f"expected host failures (a whole number 0-{MAX_RESERVE_HOSTS}) or a share of memory kept free "
        f'("25%", above 0 and below 100), got {shown(value)}',
    )


def _rule(where: Where, data: Mapping, label: str) -> TagRule:
    """The settings a mapping gives (the section itself, or one tag's entry), each checked."""
    found: dict[str, Any] = {}
    for name in LIMITS:
        if name in data:
            try:
                found[name] = _window(data[name]) if name == "window" else _whole(data[name])
            except ValueError as exc:
                raise where.error(data.line_of(name), f"{label}.{name}", str(exc)) from None
    runbook = where.require_str(data, "runbook", f"{label}.runbook")
    if runbook is not None and not runbook.strip():
        raise where.error(data.line_of("runbook"), f"{label}.runbook", "expected the name of a registered runbook")
    return TagRule(runbook=runbook, **found)
