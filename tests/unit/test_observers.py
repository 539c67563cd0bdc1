"""``notify``: one broken ``evac_event`` observer cannot keep the event from the others."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from evac import hookimpl
from evac.events import Event
from evac.plugins import notify, plugin_manager
from evac.states import EventKind
from tests.unit.enginekit import Recorder, engine, runbook


class Broken:
    """An observer that raises on every event; ``tryfirst`` so it is called before the others."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(tryfirst=True)
    def evac_event(self, event: Event) -> None:
        self.calls += 1
        raise RuntimeError(f"cannot handle {event.kind}")


class Listener:
    def __init__(self, name: str, heard: list[str]) -> None:
        self.name = name
        self.heard = heard

    @hookimpl
    def evac_event(self, event: Event) -> None:
        self.heard.append(f"{self.name}:{event.kind}")


def events(*kinds: str) -> list[Event]:
    return [Event(kind, 1) for kind in kinds]


def test_observer_after_a_failing_one_still_gets_every_event() -> None:
    pm, heard, broken = plugin_manager(load_entrypoints=False), list[str](), Broken()
    pm.register(Listener("second", heard))
    pm.register(broken, name="broken-observer")
    for event in events(EventKind.JOB_STARTED, EventKind.STEP_STARTED, EventKind.JOB_FINISHED):
        notify(pm, event)
    assert broken.calls == 3
    assert heard == ["second:job.started", "second:step.started", "second:job.finished"]


def test_a_failing_observer_is_logged_once_by_its_plugin_name(caplog: pytest.LogCaptureFixture) -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Broken(), name="broken-observer")
    with caplog.at_level(logging.DEBUG, logger="evac.plugins"):
        for event in events(EventKind.JOB_STARTED, EventKind.STEP_STARTED, EventKind.JOB_FINISHED):
            notify(pm, event)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1
    assert "'broken-observer'" in loud[0].getMessage()
    assert [r.levelno for r in caplog.records if r not in loud] == [logging.DEBUG, logging.DEBUG]


def test_observers_are_called_in_pluggy_order() -> None:
    pm, heard = plugin_manager(load_entrypoints=False), list[str]()
    pm.register(Listener("registered_first", heard))
    pm.register(Listener("registered_last", heard))
    notify(pm, Event(EventKind.JOB_STARTED, 1))
    assert heard == ["registered_last:job.started", "registered_first:job.started"]


def test_an_observer_taking_no_arguments_is_called_as_pluggy_would() -> None:
    called = []

    class Counter:
        @hookimpl
        def evac_event(self) -> None:
            called.append(True)

    pm = plugin_manager(load_entrypoints=False)
    pm.register(Counter())
    notify(pm, Event(EventKind.JOB_STARTED, 1))
    assert called == [True]


def test_a_job_with_a_failing_observer_still_reaches_every_other_observer(tmp_path: Path) -> None:
    rec = Recorder()
    eng = engine(tmp_path, rec, Broken())
    result = eng.execute(runbook("name: t\nsteps:\n  - {id: a, action: test.ok}\n"), {})
    assert result.state == "succeeded"
    assert rec.kinds() == [event.kind for _, event in eng.journal.events(result.job_id)]
