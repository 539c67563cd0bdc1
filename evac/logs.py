"""Logging for ``evac serve``: text or JSON lines, and every event as a log record."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .events import Event
from .hooks import hookimpl
from .states import EventKind


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "evac", {}))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime


class EventLog:
    """Logs each event (job transitions, host states) with its fields attached."""

    def __init__(self) -> None:
        self.log = logging.getLogger("evac.events")

    @hookimpl
    def evac_event(self, event: Event) -> None:
        if event.kind == EventKind.PROGRESS and not event.data.get("escalation") and event.data.get("level") != "alert":
            return  # per-second migration progress stays out of the log
        fields = {"event": event.kind, "job": event.job_id, "step": event.step, "item": event.item}
        level = (
            logging.WARNING
            if event.kind in (EventKind.HOST_DOWN, EventKind.MONITOR_STORM_BRAKE) or event.data.get("level") == "alert"
            else logging.INFO
        )
        self.log.log(
            level,
            "%s job=%s %s %s %s",
            event.kind,
            event.job_id,
            event.step,
            event.item,
            event.message,
            extra={"evac": fields},
        )
