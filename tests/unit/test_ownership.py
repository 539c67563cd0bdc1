"""A job's owner on etcd applies an effect only while it still owns the job: one that lost
it (its lease lapsed during a pause, and another controller claimed the job) stops short
of the effect, leaves the job ``running`` for the new owner, and is not marked failed."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from evac import Action, StepContext, hookimpl
from evac.app import App
from evac.journal import Journal
from evac.states import JobState
from evac.testing import Background, make_engine, make_plugin_manager, runbook_from_text
from tests.unit.conftest import Controllers

BOOK = runbook_from_text(
    """
name: fence-then-restart
steps:
  - id: fence
    action: test.effect
"""
)


class Effects:
    """``test.effect`` waits for ``go``, guards, then applies its effect (records it)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.applied: list[int] = []

    def effect(self, ctx: StepContext) -> Mapping[str, Any]:
        self.entered.set()
        self.go.wait(10)
        token = ctx.guard()
        self.applied.append(token)
        return {"token": token}

    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [Action("test.effect", self.effect)]


@dataclass
class View:
    """The part of the app an action's guard uses."""

    journal: Journal


def run_until_the_effect(journal: Journal) -> tuple[Effects, Background]:
    effects = Effects()
    engine = make_engine(make_plugin_manager(effects), journal, app=cast(App, View(journal)))
    job = Background(engine, BOOK)
    assert effects.entered.wait(10)
    return effects, job


def test_an_owner_that_still_holds_the_job_applies_its_effect_with_a_token(etcd_controllers: Controllers) -> None:
    a = etcd_controllers.start()
    effects, job = run_until_the_effect(a)
    effects.go.set()
    assert job.result(10).state == JobState.SUCCEEDED
    assert effects.applied == [0]  # nobody leads in this test: the token is 0


def test_an_owner_whose_job_was_claimed_meanwhile_applies_nothing_and_leaves_the_job_running(
    etcd_controllers: Controllers,
) -> None:
    a, b = etcd_controllers.start(), etcd_controllers.start()
    effects, job = run_until_the_effect(a)
    a.release(job.job_id)  # as when a's lease lapsed during a pause
    assert b.claim(job.job_id)
    effects.go.set()
    result = job.result(10)
    assert result.state == JobState.INTERRUPTED
    assert f"owned by {etcd_controllers.owner(b)} now" in result.error
    assert effects.applied == []
    record = b.job(job.job_id)
    assert record is not None and record.state == JobState.RUNNING and not record.orphaned


def test_an_owner_whose_lease_is_gone_applies_nothing(etcd_controllers: Controllers) -> None:
    a = etcd_controllers.start()
    effects, job = run_until_the_effect(a)
    etcd_controllers.kill(a)
    effects.go.set()
    assert job.result(10).state == JobState.INTERRUPTED
    assert effects.applied == []
