"""The reserve watch of ``evac serve``: an alert when the fleet can no longer restart every
protected guest after losing ``ha.reserve`` hosts, and one when it can again.

Guests started outside evac (``virsh start``, a provisioning tool), a host gone or put in
maintenance, or an ``evac ha protect`` under ``ha.admission: warn`` can each break the
reserve. Every :data:`CHECK_EVERY` seconds the leader checks it on a fresh fleet view
(:func:`evac.protection.verdict`) and records the outcome in the journal; a change from
holding to broken is announced once as ``ha.reserve_broken`` (level ``alert``: Slack's
alerts channel, the log), and the way back once as ``ha.reserve_restored``. The recorded
state survives a restart or a new leader, so neither alerts again about a break already
told (:func:`evac.protection.recorded` reads it).
"""

from __future__ import annotations

import logging
from typing import Protocol

from evac import hookimpl
from evac.appview import AppView
from evac.config import ServiceConfig
from evac.coordination import Coordination
from evac.events import Event
from evac.periodic import Periodic
from evac.plugins import notify
from evac.protection import ReserveState, record, recorded, verdict
from evac.states import EventKind

log = logging.getLogger("evac.admission")

CHECK_EVERY = 60.0  # seconds between checks (Masakari's host monitor looks every 60 s)
TARGET = "fleet"  # the item of the reserve's events
MAX_MESSAGE = 300  # characters: one line in Slack and the log


class Leader(AppView, Protocol):
    """What the reserve watch needs of the app ``evac serve`` runs (``evac.app.App``)."""

    @property
    def coordination(self) -> Coordination: ...


class ReserveWatch(Periodic):
    """Checks the reserve every ``every`` seconds on the leader; announces each change."""

    def __init__(self, app: Leader, every: float = CHECK_EVERY) -> None:
        super().__init__(every, "reserve-watch")
        self.app = app

    def tick(self) -> Event | None:
        """One check: the event announced (a change), else None."""
        if not self.app.coordination.leads():
            return None
        before = recorded(self.app.journal)
        now = ReserveState.of(verdict(self.app), before)
        event = None if (before is None or before.holds) == now.holds else self._announce(now)
        record(self.app.journal, now)  # after the announcement: a crash between repeats it, never loses it
        return event

    def _announce(self, now: ReserveState) -> Event:
        message = _one_line(now.why)
        if now.holds:
            event = Event(EventKind.HA_RESERVE_RESTORED, 0, item=TARGET, message=message, data={"reserve": now.reserve})
        else:
            data = {"reserve": now.reserve, "why": now.why, "absorbs": now.absorbs, "level": "alert"}
            event = Event(EventKind.HA_RESERVE_BROKEN, 0, item=TARGET, message=message, data=data)
        try:
            self.app.journal.add_event(event)
        except Exception:
            log.exception("journal did not record %s", event.kind)
        notify(self.app.pm, event)
        return event


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


# ---------------------------------------------------------------- hooks
@hookimpl
def evac_services(app: Leader, config: ServiceConfig) -> list[ReserveWatch]:
    return [ReserveWatch(app)]
