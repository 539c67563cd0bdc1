"""``Jobs.guest_failed``, the one front door for a guest whose QEMU died: one job per
death, restart then relocate as its policy counts, an alert when it gives up, and no
move while the host's own flow owns its guests. On the fake fleet of ``evac.testing``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from evac import StepContext, hookimpl
from evac.app import App
from evac.coordination import Solo
from evac.errors import ConfigError
from evac.events import Event
from evac.hypervisor import Hypervisor
from evac.jobs import ALERTED_AGAIN, Actor, Channel
from evac.model import HaMetadata
from evac.restartpolicy import HaSettings, RestartPolicy, TagRule
from evac.runbook import bind_params
from evac.sqlitejournal import SqliteJournal
from evac.states import EventKind, HostMode, JobState
from evac.testing import EvacKit, FakeFleet, make_plugin_manager
from evac_plugins import guestha
from tests.conftest import poll_until


class Watch:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def evac_event(self, event: Event) -> None:
        self.events.append(event)

    def alerts(self) -> list[Event]:
        return [e for e in self.events if e.job_id == 0 and e.data.get("level") == "alert"]


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    """Three hosts; web1's QEMU died on host1 (libvirt reads it ``crashed``)."""
    fleet = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(fleet.connect))
    for name in ("host1", "host2", "host3"):
        fleet.add_host(name)
    fleet.add_guest("host1", "web1", state="crashed")
    return fleet


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def app(fleet: FakeFleet, watch: Watch, tmp_path: Path) -> Iterator[App]:
    journal = SqliteJournal(":memory:")
    pm = make_plugin_manager(watch)
    if not pm.is_registered(guestha):  # $EVAC_PLUGINS may name it
        pm.register(guestha)
    yield EvacKit(pm, journal, fleet, tmp_path).app
    journal.close()


def with_ha(app: App, settings: HaSettings) -> App:
    app.config = replace(app.settings, sections={"ha": settings})
    return app


def recovered(app: App, state: JobState = JobState.SUCCEEDED) -> dict[str, object]:
    """Report web1 down, and record its job finished as ``state`` without running it."""
    started = app.jobs.guest_failed("host1", "web1", "failed")
    assert started is not None
    app.journal.finish_job(started.job, state)
    return started.params


def test_a_guest_whose_qemu_died_gets_a_job_to_restart_it_in_place(app: App) -> None:
    started = app.jobs.guest_failed("host1", "web1", "failed")
    assert started is not None
    assert (started.runbook.name, started.target) == ("guest-failure", "web1")
    assert started.params == {
        "host": "host1",
        "guest": "web1",
        "reason": "failed",
        "action": "restart",
        "decision": "restart 1 of 1 within 1 h",
    }
    (audit,) = [a for a in app.journal.audit_log() if a.action == "run"]
    assert (audit.actor, audit.target) == ("monitor", "web1")


def test_a_second_report_of_one_death_starts_no_second_job(app: App) -> None:
    assert app.jobs.guest_failed("host1", "web1", "crashed") is not None
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    assert len(app.journal.jobs()) == 1


def test_a_death_after_max_restart_restarts_is_relocated(app: App) -> None:
    recovered(app)
    assert recovered(app)["action"] == "relocate"


def test_a_restart_that_failed_counts_as_a_restart(app: App) -> None:
    recovered(app, JobState.FAILED)
    assert recovered(app)["decision"] == "relocation 1 of 1 within 1 h, after 1 restart"


def test_a_guest_past_every_limit_is_left_stopped_with_an_alert(app: App, watch: Watch) -> None:
    recovered(app)
    recovered(app)
    assert app.jobs.guest_failed("host1", "web1", "failed", Actor(Channel.SERVICE, "agent")) is None
    (alert,) = watch.alerts()
    assert alert.item == "web1"
    assert alert.kind == EventKind.GUEST_LEFT_STOPPED
    assert alert.data == {"host": "host1", "guest": "web1", "level": "alert"}
    assert alert.message == (
        "web1 left stopped on host1: it died again (failed) after 1 restart and 1 relocation within 1 h already "
        "(max_restart 1, max_relocate 1); find out why, then start it by hand"
    )
    assert [e.message for _, e in app.journal.events(0)] == [alert.message]
    (audit,) = [a for a in app.journal.audit_log() if a.action == "guest.left_stopped"]
    assert (audit.actor, audit.target) == ("service:agent", "web1")


def test_a_guest_left_stopped_is_alerted_once_however_often_it_is_reported(app: App, watch: Watch) -> None:
    with_ha(app, HaSettings(policy=RestartPolicy(max_restart=0, max_relocate=0)))
    for _ in range(3):
        assert app.jobs.guest_failed("host1", "web1", "failed") is None
    assert len(watch.alerts()) == 1
    assert app.journal.jobs() == []


def test_a_guest_left_stopped_that_stops_again_later_is_alerted_again(
    app: App, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_ha(app, HaSettings(policy=RestartPolicy(max_restart=0, max_relocate=0)))
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    later = time.time() + ALERTED_AGAIN + 1  # started by hand, say, it died again
    monkeypatch.setattr(time, "time", lambda: later)
    assert app.jobs.guest_failed("host1", "web1", "crashed") is None
    assert [a.message.split(" after ")[0] for a in watch.alerts()] == [
        "web1 left stopped on host1: it died again (failed)",
        "web1 left stopped on host1: it died again (crashed)",
    ]


def test_a_guest_running_again_is_not_recovered(app: App, fleet: FakeFleet) -> None:
    fleet.hosts["host1"].guests["web1"] = replace(fleet.hosts["host1"].guests["web1"], state="running")
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    assert app.journal.jobs() == []


def test_a_guest_gone_from_its_host_is_not_recovered(app: App, fleet: FakeFleet) -> None:
    fleet.move_guest("web1", "host3")  # relocated by the job that answered the first report
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    assert app.journal.jobs() == []


def test_no_guest_is_recovered_on_a_fenced_host_whose_failover_owns_its_guests(app: App) -> None:
    app.journal.set_host_state("host1", HostMode.FENCED, "", "cli:ops")
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    assert app.journal.jobs() == []
    (refusal,) = [a for a in app.journal.audit_log() if a.action == "guest.recover.refused"]
    assert refusal.detail == {"why": "host1 is fenced: its own flow owns its guests"}


def test_a_guest_that_dies_on_a_host_being_drained_is_relocated_not_restarted_there(app: App) -> None:
    app.journal.set_host_state("host1", HostMode.MAINTENANCE, "", "job:9")  # its drain moves running guests only
    started = app.jobs.guest_failed("host1", "web1", "failed")
    assert started is not None
    assert (started.params["action"], started.params["decision"]) == ("relocate", "host1 is in maintenance")


def test_no_guest_is_recovered_on_a_host_being_failed_over(app: App) -> None:
    app.journal.create_job("host-failure", "host-failure.yaml", {"host": "host1"}, "host1", False, "host:host1")
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    (refusal,) = [a for a in app.journal.audit_log() if a.action == "guest.recover.refused"]
    assert refusal.detail == {"why": "host1 is being failed over: its own flow owns its guests"}


def test_a_guest_on_a_host_that_does_not_answer_is_left_to_the_monitor(app: App, fleet: FakeFleet) -> None:
    fleet.hosts["host1"].up = False
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    assert [a.action for a in app.journal.audit_log()] == ["guest.recover.refused"]


def test_an_unknown_host_is_refused(app: App) -> None:
    with pytest.raises(ConfigError, match="host9"):
        app.jobs.guest_failed("host9", "web1", "failed")


def test_the_guests_tags_choose_its_limits(app: App, fleet: FakeFleet) -> None:
    guests = fleet.hosts["host1"].guests
    guests["web1"] = replace(guests["web1"], ha=HaMetadata(tags=("web",)))
    with_ha(app, HaSettings(tags={"web": TagRule(max_restart=0)}))
    assert recovered(app)["decision"] == "relocation 1 of 1 within 1 h"


def test_bad_guest_metadata_falls_back_to_the_defaults_and_says_why(
    app: App, fleet: FakeFleet, caplog: pytest.LogCaptureFixture
) -> None:
    guests = fleet.hosts["host1"].guests
    guests["web1"] = replace(guests["web1"], ha=HaMetadata(max_restart="lots"))
    with caplog.at_level(logging.WARNING, "evac.jobs"):
        assert recovered(app)["decision"] == "restart 1 of 1 within 1 h"
    assert "guest web1 on host1: metadata ha-max-restart: expected a whole number >= 0, got 'lots'" in caplog.text


def test_a_recovery_that_cannot_start_is_an_alert(app: App, watch: Watch) -> None:
    with_ha(app, HaSettings(runbook="nosuch"))
    assert app.jobs.guest_failed("host1", "web1", "failed") is None
    (alert,) = watch.alerts()
    assert alert.message.startswith(
        "web1 left stopped on host1: its recovery could not start: unknown runbook 'nosuch'"
    )


class Follower(Solo):
    def leads(self) -> bool:
        return False


def test_a_recovery_started_on_a_replica_that_does_not_lead_is_handed_to_the_leader(app: App) -> None:
    app.__dict__["coordination"] = Follower()
    started = app.jobs.guest_failed("host1", "web1", "failed")
    assert started is not None
    assert app.jobs.spawn(started) is None

    def handed_over() -> bool:
        job = app.journal.job(started.job)
        return job is not None and job.state == JobState.RUNNING and job.orphaned

    poll_until(handed_over, 10, "the job released for the leader")
    assert app.journal.events(started.job) == []


# ---------------------------------------------------------------- the runbook's actions
def test_a_guest_running_on_another_host_is_not_started_again_in_place(app: App, fleet: FakeFleet) -> None:
    fleet.add_guest("host2", "web1")  # a copy runs on host2 already
    started = app.jobs.guest_failed("host1", "web1", "failed")
    assert started is not None
    result = app.jobs.run(started)
    assert result.state == JobState.FAILED
    assert result.error == (
        "step 'report': web1 left stopped on host1: restart failed: "
        "web1 runs on host2: not started again on host1 (never two copies)"
    )


def test_a_relocation_of_a_guest_running_elsewhere_does_nothing(app: App, fleet: FakeFleet) -> None:
    with_ha(app, HaSettings(policy=RestartPolicy(max_restart=0)))
    fleet.add_guest("host3", "web1")
    started = app.jobs.guest_failed("host1", "web1", "failed")
    assert started is not None and started.params["action"] == "relocate"
    result = app.jobs.run(started)
    assert result.state == JobState.SUCCEEDED, result.error
    assert result.outputs["report"]["summary"] == "web1 runs on host3 already: nothing to do"
    assert set(fleet.hosts["host1"].guests) == {"web1"}  # not undefined: the copy on host1 is not this job's


def test_a_dry_run_of_a_relocation_names_the_target_placement_chooses(app: App, fleet: FakeFleet) -> None:
    fleet.add_guest("host2", "big", memory_mib=8192)
    book = app.runbook("guest-failure")
    params = bind_params(book, {"host": "host1", "guest": "web1", "action": "relocate"})
    result = app.engine.execute(book, params, dry_run=True)
    assert result.outputs["relocate"] == {"guest": "web1", "source": "host1", "target": "host3", "planned": True}
    assert result.outputs["report"]["summary"] == "would relocate web1 on host1"


def summary(app: App, **inputs: object) -> str:
    """The report step's line for these inputs (what the restart or relocation returned)."""
    given: dict[str, object] = {"host": "host1", "guest": "web1", **inputs}
    return str(guestha.report(StepContext(1, "report", given, {}, app=app))["summary"])


def test_the_report_of_a_restart_says_in_place_and_counts(app: App) -> None:
    done = {"guest": "web1", "host": "host1", "seconds": 0.4}
    assert summary(app, action="restart", decision="restart 2 of 3 within 10 min", restart=done) == (
        "web1 restarted in place on host1 (restart 2 of 3 within 10 min)"
    )


def test_the_report_of_a_relocation_names_the_new_host(app: App) -> None:
    done = {"guest": "web1", "source": "host1", "target": "host3", "seconds": 1.2}
    assert summary(app, action="relocate", decision="relocation 1 of 1 within 1 h", relocate=done) == (
        "web1 relocated from host1 to host3 (relocation 1 of 1 within 1 h)"
    )
