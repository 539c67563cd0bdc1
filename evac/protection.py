"""HA membership and the reserve on the running fleet: where :mod:`evac.admission` meets
libvirt and the journal.

``evac ha protect|unprotect GUEST`` writes the guest's ``ha-protected`` metadata (live and
persistent) after admission control has had its say, and audits it; ``evac ha capacity``
and the service's reserve check read the same fleet view the drain and failover plan on.
The service records the reserve's last state in the journal (:func:`record`), so every
process and replica reads one answer (:func:`recorded`) and a new leader does not alert
again about a break already told.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from .admission import CANDIDATE_STATES, DEFAULT_POLICY, Admission, AdmissionMode, Verdict, admit, check
from .appview import AppView
from .connections import current
from .errors import AdmissionRefused, ConfigError, EvacError
from .fleet import views as fleet_views
from .jobs import Actor
from .journal import Journal
from .placement import HostView
from .restartpolicy import HaSettings
from .yamldoc import suggest

POLICY = DEFAULT_POLICY
RESERVE_KEY = "ha.reserve"  # the journal fact the service keeps: the reserve's last state
ATTRIBUTE = "ha-protected"


def verdict(app: AppView, views: list[HostView] | None = None) -> Verdict:
    """The reserve ``ha:`` asks for, on the fleet as it runs now."""
    return check(fleet_views(app) if views is None else views, HaSettings.of(app.settings.sections).reserve, POLICY)


@dataclass(frozen=True)
class Protection:
    """What ``protect``/``unprotect`` did."""

    guest: str
    hosts: tuple[str, ...]  # where its metadata was written
    protected: bool
    admission: Admission | None = None  # protect's: the reserve before and after
    warning: str = ""  # under ``warn``: the reserve this protection breaks


def protect(app: AppView, guest: str, actor: Actor, on: bool = True) -> Protection:
    """Make ``guest`` a member of HA (``on``) or not: its ``ha-protected`` metadata on every
    reachable host that defines it, audited. Under ``ha.admission: enforce`` a protection
    that breaks the reserve is refused (:class:`AdmissionRefused`, audited, nothing
    written); under ``warn`` it is done and ``warning`` says what it broke."""
    settings = HaSettings.of(app.settings.sections)
    views = fleet_views(app)
    hosts = tuple(h.name for h in views if any(g.name == guest for g in h.guests))
    if not hosts:
        raise ConfigError(f"guest '{guest}': not on any reachable host{_hint(views, guest)}")
    verb = "ha.protect" if on else "ha.unprotect"
    found = admit(views, guest, settings.reserve, POLICY) if on else None
    warning = ""
    if found is not None and found.breaks:
        if settings.admission is AdmissionMode.ENFORCE:
            why = found.why()
            app.journal.audit(str(actor), f"{verb}.refused", guest, {"why": why, "hosts": list(hosts)})
            raise AdmissionRefused(f"protect {guest}: refused by ha.admission: enforce ({why}); nothing changed")
        warning = found.why()
    links = current()
    done: list[str] = []
    for name in hosts:
        try:
            with links.use(app.inventory.host(name)) as hv:
                hv.set_guest_metadata(guest, ATTRIBUTE, "yes" if on else "no")
        except EvacError as exc:
            app.journal.audit(str(actor), f"{verb}.failed", guest, {"error": str(exc), "written": done})
            written = f"; written on {', '.join(done)} already" if done else ""
            raise EvacError(f"{verb.removeprefix('ha.')} {guest}: {exc}{written}") from None
        done.append(name)
    detail: dict[str, object] = {"hosts": list(hosts)}
    if warning:
        detail["warning"] = warning
    app.journal.audit(str(actor), verb, guest, detail)
    return Protection(guest, hosts, on, found, warning)


def _hint(views: list[HostView], guest: str) -> str:
    known = [g.name for h in views for g in h.guests]
    away = [f"{h.name} ({h.state})" for h in views if h.state not in CANDIDATE_STATES]
    return suggest(guest, known) + (f"; not asked: {', '.join(away)}" if away else "")


# ---------------------------------------------------------------- the reserve's recorded state
@dataclass(frozen=True)
class ReserveState:
    """The reserve as the service last checked it."""

    holds: bool
    reserve: str  # "1 host", "25% of memory"
    why: str  # one line
    absorbs: int  # host failures absorbed then
    checked: float  # epoch seconds of the check
    since: float  # epoch seconds it has held (or been broken) since

    @classmethod
    def of(cls, found: Verdict, before: ReserveState | None, now: float | None = None) -> ReserveState:
        """This check's outcome; ``since`` carries over from ``before`` while nothing changed."""
        now = time.time() if now is None else now
        same = before is not None and before.holds == found.holds
        since = before.since if same and before is not None else now
        return cls(found.holds, str(found.reserve), found.why, found.report.absorbs, now, since)


def recorded(journal: Journal) -> ReserveState | None:
    """The reserve's last checked state (None: never checked, or unreadable)."""
    text = journal.recall(RESERVE_KEY)
    if not text:
        return None
    try:
        return ReserveState(**json.loads(text))
    except (TypeError, ValueError):
        return None


def record(journal: Journal, state: ReserveState) -> None:
    """Keep a check's outcome for :func:`recorded`."""
    journal.remember(RESERVE_KEY, json.dumps(asdict(state), sort_keys=True))
