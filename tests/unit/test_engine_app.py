"""``StepContext.app``: actions reach the running evac through one typed field, not a dict."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from evac import Action, StepContext, hookimpl
from evac.app import App
from evac.engine import Engine
from evac.plugins import plugin_manager
from evac.sqlitejournal import SqliteJournal
from evac.states import JobState
from tests.unit.enginekit import runbook

ONE_STEP = runbook("name: t\nsteps:\n  - {id: a, action: test.app}\n")


class SeesApp:
    """An action that records the ``app`` its context carries."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def _run(self, ctx: StepContext) -> Mapping[str, Any]:
        self.seen.append(ctx.app)
        return {}

    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [Action("test.app", self._run)]


def build(tmp_path: Path, plugin: object, **kwargs: Any) -> Engine:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(plugin)
    return Engine(pm, SqliteJournal(tmp_path / "journal.db"), sleep=lambda _s: None, poll_interval=0.01, **kwargs)


def test_actions_get_the_app_the_engine_was_built_with(tmp_path: Path) -> None:
    app, plugin = cast(App, object()), SeesApp()
    build(tmp_path, plugin, app=app).execute(ONE_STEP, {})
    assert plugin.seen == [app]


def test_a_built_in_action_needing_the_app_fails_clearly_without_one(tmp_path: Path) -> None:
    pm = plugin_manager(load_entrypoints=False, modules=["evac_plugins.drain"])
    eng = Engine(pm, SqliteJournal(tmp_path / "journal.db"), sleep=lambda _s: None)
    result = eng.execute(runbook("name: t\nsteps:\n  - {id: a, action: host.enable, with: {host: h1}}\n"), {})
    assert result.state == JobState.FAILED
    assert "needs the evac app" in result.error
