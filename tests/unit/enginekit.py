"""Small inline plugins for engine tests; the rest comes from ``evac.testing``, the kit
third-party plugin authors use too (``runbook``, ``engine`` and ``Background`` are kept
under their old names)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evac import Action, StepContext, hookimpl
from evac.engine import Engine
from evac.errors import TransientError
from evac.events import Event
from evac.sqlitejournal import SqliteJournal
from evac.testing import Background, make_engine, make_plugin_manager, runbook_from_text

__all__ = ["Background", "Recorder", "engine", "runbook"]


class Recorder:
    """Actions that record calls: ``test.ok``, ``test.flaky`` (fails N times), ``test.fail``,
    ``test.block`` (waits on an event or abort), ``test.undo``; and every event."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.events: list[Event] = []
        self.failures_left: dict[str, int] = {}
        self.release = threading.Event()
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()
        self.entered = threading.Event()

    def _ok(self, ctx: StepContext) -> Mapping[str, Any]:
        with self.lock:
            self.calls.append((ctx.step, ctx.inputs.get("value", ctx.item)))
        return {"value": ctx.inputs.get("value"), "item": ctx.item}

    def _flaky(self, ctx: StepContext) -> Mapping[str, Any]:
        key = str(ctx.item or ctx.step)
        self.calls.append((ctx.step, ctx.attempt))
        left = self.failures_left.get(key, 0)
        if left:
            self.failures_left[key] = left - 1
            raise TransientError(f"{key} flaked")
        return {"attempts": ctx.attempt}

    def _fail(self, ctx: StepContext) -> Mapping[str, Any]:
        self.calls.append((ctx.step, ctx.item))
        if ctx.item is None or str(ctx.item) in ctx.inputs.get("bad", [ctx.item]):
            raise RuntimeError(f"{ctx.item or ctx.step} broke")
        return {}

    def _block(self, ctx: StepContext) -> Mapping[str, Any]:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.entered.set()
        try:
            while not self.release.wait(0.01):
                ctx.check_abort()
        finally:
            with self.lock:
                self.running -= 1
        self.calls.append((ctx.step, ctx.item))
        return {}

    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [
            Action("test.ok", self._ok, plan=lambda ctx: {"would": ctx.inputs.get("value")}),
            Action("test.flaky", self._flaky),
            Action("test.fail", self._fail),
            Action("test.block", self._block),
            Action("test.undo", self._ok, inputs=("value",)),
        ]

    @hookimpl
    def evac_event(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


runbook = runbook_from_text


def engine(tmp_path: Path, *plugins: object, sleep: Callable[[float], None] | None = None) -> Engine:
    """An engine with ``plugins`` and a journal file in ``tmp_path`` (so a test can reopen it)."""
    return make_engine(make_plugin_manager(*plugins), SqliteJournal(tmp_path / "journal.db"), sleep=sleep)
