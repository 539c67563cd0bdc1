"""The jobs front door: every channel gets the same checks, runbooks and audit."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from evac import hookimpl
from evac.app import App, make_app
from evac.cli import main
from evac.coordination import Solo
from evac.errors import ConfigError
from evac.events import Event
from evac.jobs import Actor, Channel
from evac.plugins import plugin_manager
from evac.states import EventKind, HostMode, JobState
from tests.conftest import poll_until

CLI = Actor(Channel.CLI, "ops")
SLACK = Actor(Channel.SLACK, "U1")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port that answers, standing in for a live host's libvirt daemon."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def fleet(tmp_path: Path, libvirt_port: int, extra: str = "", doctor: bool = False) -> Path:
    """Two hosts on loopback; host1's libvirt port is ``libvirt_port``, nothing answers SSH.
    No doctor could pass such hosts, so ``monitor.require_doctor`` is off unless ``doctor``."""
    dead = closed_port()
    (tmp_path / "hosts.yaml").write_text(
        "hosts:\n"
        f"  - {{name: host1, uri: 'qemu+tcp://127.0.0.1:{libvirt_port}/system', ssh: {{host: 127.0.0.1, port: {dead}}}}}\n"
        f"  - {{name: host2, uri: 'qemu+tcp://127.0.0.1:{dead}/system', ssh: {{host: 127.0.0.1, port: {dead}}}}}\n"
    )
    config = tmp_path / "evac.yaml"
    config.write_text(
        f"inventory: hosts.yaml\njournal: journal.db\nmonitor: {{require_doctor: {str(doctor).lower()}}}\n{extra}"
    )
    return config


def test_manual_fence_is_refused_while_the_host_answers_on_every_channel(
    tmp_path: Path, listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fleet(tmp_path, listening)
    app = make_app(config)
    with pytest.raises(ConfigError, match="host1 answers on its libvirt port: it is not off"):
        app.jobs.fence_manually("host1", SLACK)
    assert main(["--config", str(config), "fence", "host1", "--confirm-manually"]) == 2
    assert "it is not off" in capsys.readouterr().err
    assert "host1" not in app.journal.host_states()
    assert [a.action for a in app.journal.audit_log()].count("fence.manual.refused") == 2


def test_manual_fence_of_a_silent_host_is_recorded_and_audited(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    app.jobs.fence_manually("host1", CLI)
    assert app.journal.host_states()["host1"].state == HostMode.FENCED
    (entry,) = [a for a in app.journal.audit_log() if a.action == "fence.manual"]
    assert entry.actor == "cli:ops"


def test_only_the_cli_runs_a_runbook_from_a_file(tmp_path: Path) -> None:
    book = tmp_path / "mine.yaml"
    book.write_text("name: mine\nsteps:\n  - {id: say, action: notify.log, with: {text: hi}}\n")
    app = make_app(fleet(tmp_path, closed_port()))
    assert app.jobs.start(str(book), {}, CLI).runbook.name == "mine"
    for channel in (Channel.SLACK, Channel.WEBHOOK, Channel.ALERTMANAGER, Channel.MONITOR):
        with pytest.raises(ConfigError, match="only the CLI runs runbooks from files"):
            app.jobs.start(str(book), {}, Actor(channel, "x"))


def test_the_drain_and_failover_runbooks_are_the_ones_the_config_names(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port(), "runbooks: {drain: nosuchdrain, failover: nosuchfailover}\n"))
    assert (app.settings.runbooks.drain, app.settings.runbooks.failover) == ("nosuchdrain", "nosuchfailover")
    with pytest.raises(ConfigError, match="unknown runbook 'nosuchfailover'"):
        app.jobs.fail_over("host1", CLI, "test")
    with pytest.raises(ConfigError, match="unknown runbook 'nosuchfailover'"):
        app.jobs.evacuate("host1", CLI)  # host1 does not answer: a drain becomes a failover


def test_a_drain_of_a_silent_host_becomes_a_failover_and_says_so(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    started = app.jobs.evacuate("host1", CLI, dry_run=True)
    assert started.runbook.name == "host-failure"
    assert "host1 does not answer" in started.note


def test_cancel_and_approve_are_audited_with_the_channel(tmp_path: Path) -> None:
    book = tmp_path / "gate.yaml"
    book.write_text("name: gate\nsteps:\n  - {id: ok, action: notify.log, with: {text: hi}, approval: {text: go}}\n")
    app = make_app(fleet(tmp_path, closed_port()))
    started = app.jobs.start(str(book), {}, CLI)
    app.jobs.cancel(started.job, SLACK)
    assert app.jobs.approve(started.job, SLACK, "ok") == ["ok"]
    actions = {(a.actor, a.action) for a in app.journal.audit_log()}
    assert {("cli:ops", "run"), ("slack:U1", "cancel"), ("slack:U1", "approve")} <= actions
    with pytest.raises(ConfigError, match="cancel: no job 99"):
        app.jobs.cancel(99, CLI)


def failover(app: App) -> tuple[str, str, dict[str, object]]:
    app.journal.set_host_state("host1", HostMode.FENCED, "off by hand", "test")  # the fence step then passes
    result = app.jobs.run(app.jobs.fail_over("host1", Actor(Channel.ALERTMANAGER, "HostDown"), "alert"))
    return result.state, result.error, result.outputs.get("report") or {}


def test_a_failover_without_a_snapshot_fails_and_says_what_to_do(tmp_path: Path) -> None:
    state, error, _ = failover(make_app(fleet(tmp_path, closed_port())))
    assert state == JobState.FAILED
    assert "no snapshot of what ran on host1" in error
    assert "nothing was restarted" in error


def test_a_failover_of_a_host_known_to_run_nothing_succeeds_and_says_so(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    app.journal.save_definitions("host1", {})
    state, _, report = failover(app)
    assert state == JobState.SUCCEEDED
    assert "it ran no guests" in str(report["summary"])
    assert report["snapshot_guests"] == 0
    assert isinstance(report["snapshot_age"], float)


def test_the_monitor_asks_a_failover_for_one_last_check_not_two(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    started = app.jobs.fail_over("host1", Actor(Channel.MONITOR), "keepalive lost", checks=1)
    assert started.params["checks"] == 1 and started.params["reason"] == "keepalive lost"


def test_a_custom_failover_runbook_without_checks_gets_only_host_and_reason(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "mine.yaml").write_text(
        "name: mine\nparams: {host: {type: host, required: true}, reason: {type: string, default: x}}\n"
        "steps:\n  - {id: say, action: notify.log, with: {text: hi}}\n"
    )

    class Books:
        @hookimpl
        def evac_runbook_dirs(self) -> list[Path]:
            return [books]

    pm = plugin_manager()
    pm.register(Books())
    app = make_app(fleet(tmp_path, closed_port(), "runbooks: {failover: mine}\n"), pm)
    started = app.jobs.fail_over("host1", Actor(Channel.MONITOR), "down", checks=1)
    assert (started.runbook.name, started.params) == ("mine", {"host": "host1", "reason": "down"})


def test_a_failover_runbook_that_does_not_exist_is_refused_at_start_not_when_a_host_dies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fleet(tmp_path, closed_port(), "runbooks: {failover: nosuch}\n")
    assert main(["--config", str(config), "config", "check"]) == 2
    assert f"{config}: runbooks.failover: unknown runbook 'nosuch'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="runbooks.failover: unknown runbook 'nosuch'"):
        make_app(config).jobs.check()


def test_a_dead_host_whose_failover_cannot_start_raises_an_alert(tmp_path: Path) -> None:
    seen: list[Event] = []

    class Watch:
        @hookimpl
        def evac_event(self, event: Event) -> None:
            seen.append(event)

    pm = plugin_manager()
    pm.register(Watch())
    make_app(fleet(tmp_path, closed_port(), "runbooks: {failover: nosuch}\n"), pm).jobs.host_down("host1", "lost")
    (alert,) = [e for e in seen if e.kind == EventKind.HOST_FAILOVER_NOT_STARTED]
    assert alert.data == {"host": "host1", "level": "alert"}
    assert "host1 is down (lost) but its failover could not start: unknown runbook 'nosuch'" in alert.message


def test_refusals_are_audited_with_who_asked_and_why(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    app.journal.set_host_state("host1", HostMode.MAINTENANCE, "kernel", "cli:ops")
    with pytest.raises(ConfigError, match="already in maintenance"):
        app.jobs.evacuate("host1", SLACK, runbook="maintenance")
    with pytest.raises(ConfigError, match="only the CLI"):
        app.jobs.start("/etc/passwd.yaml", {}, SLACK)
    refused = [(a.actor, a.action, a.target) for a in app.journal.audit_log() if a.action.endswith(".refused")]
    assert ("slack:U1", "run.refused", "host1") in refused
    assert ("slack:U1", "run.refused", "/etc/passwd.yaml") in refused


def test_only_a_step_with_an_approval_gate_can_be_approved(tmp_path: Path) -> None:
    book = tmp_path / "gate.yaml"
    book.write_text("name: gate\nsteps:\n  - {id: ok, action: notify.log, with: {text: hi}}\n")
    app = make_app(fleet(tmp_path, closed_port()))
    started = app.jobs.start(str(book), {}, CLI)
    with pytest.raises(ConfigError, match="step 'ok' of job 1 has no approval gate"):
        app.jobs.approve(started.job, CLI, "ok")


def test_evacuate_runs_a_drain_runbook_from_a_file_given_on_the_command_line(
    tmp_path: Path, listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "mydrain.yaml"
    book.write_text(
        "name: mydrain\nparams: {host: {type: host, required: true}}\n"
        "steps:\n  - {id: say, action: notify.log, with: {text: 'drain {{ params.host }}'}}\n"
    )
    config = str(fleet(tmp_path, listening))
    assert main(["--config", config, "evacuate", "host1", "--runbook", str(book), "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"]["say"] == {"text": "drain host1"}


def test_the_evacuate_prompt_names_the_failover_it_would_really_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def answer(question: str) -> str:
        asked.append(question)
        return "n"

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", answer)
    assert main(["--config", str(fleet(tmp_path, closed_port())), "evacuate", "host1"]) == 1
    assert asked == ["Evacuate host1 with runbook 'host-failure'? [y/N] "]
    assert "host1 does not answer: running host-failure" in capsys.readouterr().out


class Follower(Solo):
    """A replica that does not lead (docs/ha.md)."""

    def leads(self) -> bool:
        return False


def test_a_failover_an_alert_starts_on_a_replica_that_does_not_lead_is_handed_to_the_leader(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    app.__dict__["coordination"] = Follower()
    started = app.jobs.fail_over("host1", Actor(Channel.ALERTMANAGER, "HostDown"), "alert HostDown")
    assert app.jobs.spawn(started) is None

    def handed_over() -> bool:
        job = app.journal.job(started.job)
        return job is not None and job.state == JobState.RUNNING and job.orphaned  # the leader's to claim

    poll_until(handed_over, 10, "the job released for the leader")
    assert app.journal.events(started.job) == []  # nothing ran here


def test_a_drain_runs_where_it_was_started_whoever_leads(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    app.__dict__["coordination"] = Follower()
    book = tmp_path / "mine.yaml"
    book.write_text("name: mine\nsteps:\n  - {id: say, action: notify.log, with: {text: hi}}\n")
    thread = app.jobs.spawn(app.jobs.start(str(book), {}, CLI))
    assert thread is not None
    thread.join(10)
    assert app.journal.jobs()[0].state == JobState.SUCCEEDED


def test_the_monitor_fences_no_host_the_doctor_never_checked_and_the_alert_says_what_to_run(tmp_path: Path) -> None:
    events: list[Event] = []

    class Alerts:
        @hookimpl
        def evac_event(self, event: Event) -> None:
            events.append(event)

    app = make_app(fleet(tmp_path, closed_port(), doctor=True))
    app.pm.register(Alerts())
    app.jobs.host_down("host1", "libvirt connection lost")
    assert app.journal.jobs() == []
    (alert,) = [e for e in events if e.kind == EventKind.HOST_FAILOVER_NOT_STARTED]
    assert alert.message.endswith(
        "host1: automatic fencing refused: evac doctor: never checked"
        " (run `evac doctor host1`, or set monitor.require_doctor: false)"
    )
    assert alert.data["level"] == "alert"


def test_an_operators_own_failover_needs_no_doctor(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port(), doctor=True))
    assert app.jobs.fail_over("host1", CLI, "by hand", checks=1).runbook.name == "host-failure"


def test_the_failover_a_down_host_gets_is_the_job_its_monitor_waits_for(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    job = app.jobs.host_down("host1", "libvirt connection lost")
    assert [(j.id, j.runbook) for j in app.journal.jobs()] == [(job, "host-failure")]


def test_a_host_that_dies_while_its_drain_holds_its_lock_is_asked_to_fail_over_again_later(tmp_path: Path) -> None:
    events: list[Event] = []

    class Alerts:
        @hookimpl
        def evac_event(self, event: Event) -> None:
            events.append(event)

    app = make_app(fleet(tmp_path, closed_port()))
    app.pm.register(Alerts())
    drain = app.journal.create_job("maintenance", "cli:ops", {"host": "host1"}, "host1", False, "host:host1")
    assert app.jobs.host_down("host1", "libvirt connection lost") == drain  # asked again once it ends
    (alert,) = [e for e in events if e.kind == EventKind.HOST_FAILOVER_NOT_STARTED]
    assert alert.data == {"host": "host1", "job": drain, "level": "alert"}
    assert (
        alert.message
        == f"host1 is down (libvirt connection lost); its failover waits for job {drain}, which holds its lock"
    )
    app.journal.finish_job(drain, JobState.FAILED)
    failover = app.journal.create_job("host-failure", "monitor", {"host": "host1"}, "host1", False, "host:host1")
    assert app.jobs.host_down("host1", "libvirt connection lost") == failover  # one runs: waited for, no alert
    assert [j.id for j in app.journal.jobs()] == [failover, drain]
    assert len([e for e in events if e.kind == EventKind.HOST_FAILOVER_NOT_STARTED]) == 1


def test_a_failed_drain_of_a_host_already_in_maintenance_leaves_it_as_it_was(tmp_path: Path) -> None:
    """The nemesis, seed 1414496797: host2, emptied by its drain, died in maintenance; a
    second drain failed (host2 does not answer) and its rollback enabled the dead host."""
    app = make_app(fleet(tmp_path, closed_port()))
    app.journal.set_host_state("host1", HostMode.MAINTENANCE, "disks", "job:1")
    result = app.jobs.run(app.jobs.evacuate("host1", CLI, "again", force=True, runbook="maintenance"))
    assert result.state == JobState.FAILED
    state = app.journal.host_states()["host1"]
    assert (state.state, state.reason, state.actor) == (HostMode.MAINTENANCE, "disks", "job:1")


def test_a_failed_drain_of_an_enabled_host_enables_it_again(tmp_path: Path) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    assert app.jobs.run(app.jobs.start("maintenance", {"host": "host1"}, CLI, "host1")).state == JobState.FAILED
    assert "host1" not in app.journal.host_states()


@pytest.mark.parametrize(
    ("mode", "said"),
    [(HostMode.MAINTENANCE, "host1 does not answer"), (HostMode.FENCED, "host1 is fenced and does not answer")],
)
def test_a_return_to_a_host_that_does_not_answer_fails_before_it_enables_it(
    mode: HostMode, said: str, tmp_path: Path
) -> None:
    app = make_app(fleet(tmp_path, closed_port()))
    app.journal.set_host_state("host1", mode, "before", "job:1")
    result = app.jobs.run(app.jobs.start("maintenance-return", {"host": "host1"}, CLI, "host1"))
    assert result.state == JobState.FAILED and f"{said}: power it on" in result.error
    assert app.journal.host_states()["host1"].state == mode
