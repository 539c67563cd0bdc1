"""The Slack bot, tested as slack-bolt tests itself: a local mock Web API server and
correctly signed requests dispatched to the app. The drain here is an inline plugin:
the Slack side is the point (the lab drain has its own tests)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from evac import Action, StepContext, hookimpl
from evac.app import App
from evac.config import RunbookNames, ServiceConfig
from evac.doctor import Check, DoctorCheck, DoctorContext, DoctorRun, Finding, Result, last_doctor
from evac.errors import ConfigError, FencingError
from evac.events import Event
from evac.inventory import HostSpec
from evac.jobs import Actor, Channel
from evac.plugins import plugin_manager
from evac.states import EventKind, HostMode, JobState, StepState
from evac.yamldoc import load_text
from evac_bots.config import Rule, SlackConfig, parse_slack
from evac_bots.slackapp import Bot, doctor_messages, doctor_summary
from tests.conftest import poll_until
from tests.slackmock import SlackMock, action_body, button_value, command_body, event_body, signed, slack_mock

SECRET = "s3cr3t"
OPS, OTHER, GROUPIE = "UOPS", "UOTHER", "UGROUPIE"
RUNBOOK = """
name: drain-test
lock: "host:{{ params.host }}"
params: {host: {type: host, required: true}, reason: {type: string, default: test}}
steps:
  - {id: plan, action: fake.plan, with: {host: "{{ params.host }}"}}
  - id: migrate
    action: fake.move
    for_each: "{{ steps.plan.moves }}"
    concurrency: 2
    with: {guest: "{{ item.guest }}", target: "{{ item.target }}"}
"""
RUNBOOKS = {
    "drain-test": RUNBOOK,
    "failover-test": """
name: failover-test
lock: "host:{{ params.host }}"
params: {host: {type: host, required: true}, reason: {type: string, default: test}}
steps:
  - {id: fence, action: fake.fence, with: {host: "{{ params.host }}"}}
  - {id: restart, action: notify.log, with: {text: "restart the guests of {{ params.host }}"}}
""",
    "gated": f"""
name: gated
steps:
  - {{id: go, action: notify.log, with: {{text: done}}, approval: {{text: 'Proceed?', approvers: [{OPS}]}}}}
""",
    "gated-open": """
name: gated-open
steps:
  - {id: go, action: notify.log, with: {text: done}, approval: {text: 'Proceed?'}}
""",
}


class Runbooks:
    """Registers a directory of runbooks, as a plugin does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @hookimpl
    def evac_runbook_dirs(self) -> list[Path]:
        return [self.path]


class Clock:
    """The bot's clock, moved by hand: cache expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeDrain:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.moved: list[str] = []
        self.count = 3
        self.unfenceable = {"host4"}  # hosts whose fence fails (until recorded fenced by hand)

    def plan(self, ctx: StepContext) -> Mapping[str, Any]:
        moves = [
            {
                "guest": f"vm{i}",
                "memory_mib": 128,
                "source": ctx.inputs["host"],
                "target": "host1",
                "strategy": "live",
                "reason": "room",
            }
            for i in range(self.count)
        ]
        return {"source": ctx.inputs["host"], "moves": moves, "unplaceable": [], "warnings": ["N+1: tight"]}

    def move(self, ctx: StepContext) -> Mapping[str, Any]:
        while not self.release.wait(0.01):
            ctx.check_abort()
        self.moved.append(ctx.inputs["guest"])
        return {"guest": ctx.inputs["guest"], "target": ctx.inputs["target"], "seconds": 0.1, "downtime_ms": 12}

    def fence(self, ctx: StepContext) -> Mapping[str, Any]:
        """As plugins/failover.py fences: an alert of kind fence_failed when it cannot."""
        host = str(ctx.inputs["host"])
        assert ctx.app is not None
        state = ctx.app.journal.host_states().get(host)
        if host in self.unfenceable and not (state and state.state == HostMode.FENCED):
            message = f"ALERT: {host} could not be fenced: every fence method failed"
            ctx.progress(message, level="alert", kind="fence_failed", host=host)
            raise FencingError(message)
        return {"host": host, "method": "fake"}

    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [
            Action("fake.plan", self.plan, plan=self.plan),
            Action("fake.move", self.move),
            Action("fake.fence", self.fence),
        ]


@pytest.fixture
def mock() -> Iterator[SlackMock]:
    with slack_mock(groups={"SOPS": [GROUPIE]}) as m:
        yield m


@pytest.fixture
def drain() -> FakeDrain:
    return FakeDrain()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def answering_port() -> Iterator[int]:
    """A port that answers, as a running host's libvirtd does."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()


@pytest.fixture
def libvirt_port() -> Iterator[int]:
    with answering_port() as port:
        yield port


@contextmanager
def running_bot(tmp_path: Path, mock: SlackMock, drain: FakeDrain, clock: Clock, libvirt_port: int) -> Iterator[Bot]:
    """A bot in HTTP mode on the mock Web API. Hosts 1-3 answer on their libvirt port;
    host4 is down. On the way out, every click has started what it starts and every job
    has ended."""
    inventory = tmp_path / "hosts.yaml"
    uris = {f"host{i}": f"qemu+tcp://127.0.0.1:{libvirt_port}/system" for i in (1, 2, 3)}
    uris["host4"] = "qemu+tcp://127.0.0.1:9/system"
    inventory.write_text("hosts:\n" + "".join(f"  - {{name: {h}, uri: '{u}'}}\n" for h, u in uris.items()))
    books = tmp_path / "runbooks"
    books.mkdir()
    for name, text in RUNBOOKS.items():
        (books / f"{name}.yaml").write_text(text)
    pm = plugin_manager(load_entrypoints=False, modules=["evac_plugins.basics"])
    pm.register(drain)
    pm.register(Runbooks(books))
    settings = ServiceConfig(
        source="test",
        inventory=inventory,
        journal=tmp_path / "j.db",
        runbooks=RunbookNames(drain="drain-test", failover="failover-test"),
    )
    app = App.from_config(settings, pm)
    ops = Rule(users=frozenset({OPS}), groups=frozenset({"SOPS"}))
    acl = {"evacuate": ops, "cancel": ops, "fence": ops, "approve": ops, "brake": Rule(users=frozenset({OPS}))}
    config = SlackConfig(bot_token="xoxb-test", signing_secret=SECRET, mode="http", alerts_channel="CALERTS", acl=acl)
    the_bot = Bot(app, config, client=WebClient(token="xoxb-test", base_url=mock.url), clock=clock)
    the_bot.progress.min_interval = 0.05
    try:
        yield the_bot
    finally:
        drain.release.set()
        settle(the_bot)  # every click has started what it starts
        for job in app.journal.unfinished_jobs():  # a gate nobody approved
            app.jobs.cancel(job.id, Actor(Channel.CLI, "test teardown"))
        app.jobs.join(30)
        the_bot.close()


@pytest.fixture
def bot(tmp_path: Path, mock: SlackMock, drain: FakeDrain, clock: Clock, libvirt_port: int) -> Iterator[Bot]:
    with running_bot(tmp_path, mock, drain, clock, libvirt_port) as the_bot:
        yield the_bot


def slash(bot: Bot, mock: SlackMock, text: str, user: str = OPS, command: str = "/evacuate", **kw: Any) -> Any:
    return bot.bolt.dispatch(signed(SECRET, command_body(command, text, user, mock.response_url), **kw))


def press(bot: Bot, mock: SlackMock, action: str, value: str, user: str = OPS, **kw: Any) -> Any:
    return bot.bolt.dispatch(signed(SECRET, action_body(action, value, user, mock.response_url), **kw))


def event(bot: Bot, kind: str, **fields: Any) -> Any:
    return bot.bolt.dispatch(signed(SECRET, event_body({"type": kind, **fields})))


def preview_value(mock: SlackMock, count: int = 1, action: str = "evac_confirm") -> str:
    poll_until(lambda: len(mock.find("chat.postMessage", "Confirm drain")) >= count, 10, f"preview number {count}")
    call = mock.find("chat.postMessage", "Confirm drain")[count - 1]
    blocks = json.loads(call.args["blocks"]) if isinstance(call.args["blocks"], str) else call.args["blocks"]
    button = next(
        e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "evac_confirm"
    )
    assert "confirm" in button  # a Block Kit confirmation dialog guards it
    return button_value(call, action)


def failed_fence(bot: Bot, mock: SlackMock, host: str = "host4") -> str:
    """Fail a failover of ``host`` at its fence step: the value of the button its alert offers."""
    started = bot.evac.jobs.fail_over(host, Actor(Channel.CLI, "test"), f"{host} is down")
    bot.launch(started, "C1", f"Failover {host}")
    value = button_value(mock.wait("chat.postMessage", f"{host} could not be fenced"), "evac_fence_manual")
    poll_until(lambda: (j := bot.evac.journal.job(started.job)) is not None and j.finished, 10, "the failover")
    return value


def settle(bot: Bot) -> None:
    """Wait for every listener already dispatched to finish (so nothing more is on its way)."""
    bot.executor.shutdown(wait=True)


def test_slash_command_is_acked_within_3_seconds_and_posts_the_plan_preview(bot: Bot, mock: SlackMock) -> None:
    started = time.monotonic()
    response = slash(bot, mock, "host3 kernel update")
    assert response.status == 200 and time.monotonic() - started < 3
    call = mock.wait("chat.postMessage", "Drain host3?")
    text = json.dumps(call.args)
    assert "vm0" in text and "N+1: tight" in text and "kernel update" in text


def test_confirm_runs_the_job_with_progress_updates_thread_details_and_a_summary(
    bot: Bot, mock: SlackMock, drain: FakeDrain
) -> None:
    slash(bot, mock, "host3")
    assert press(bot, mock, "evac_confirm", preview_value(mock)).status == 200
    mock.wait("chat.postMessage", "Drain host3: job")
    drain.release.set()
    mock.wait("chat.update", "succeeded", timeout=20)
    assert len(mock.find("chat.postMessage", "vm")) >= 3  # one thread reply per guest
    assert mock.find("chat.postMessage", "12 ms downtime")
    assert mock.find("chat.update", "3/3")
    assert sorted(drain.moved) == ["vm0", "vm1", "vm2"]
    assert bot.evac.journal.audit_log()[0].actor == f"slack:{OPS}"


def test_a_report_too_long_for_a_message_is_uploaded_as_a_file_in_the_thread(
    bot: Bot, mock: SlackMock, drain: FakeDrain
) -> None:
    drain.count = 60
    drain.release.set()
    slash(bot, mock, "host3")
    press(bot, mock, "evac_confirm", preview_value(mock))
    done = mock.wait("files.completeUploadExternal", timeout=30)
    assert "evac-job-" in json.dumps(mock.wait("files.getUploadURLExternal").args)
    assert "vm59" in json.dumps(mock.wait("upload").args)  # the whole report went up
    assert "thread_ts" in done.args  # into the job's thread, not the channel


def test_member_of_an_allowed_user_group_may_evacuate(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3", user=GROUPIE)
    mock.wait("chat.postMessage", "Drain host3?")


def test_unauthorized_user_is_refused_politely_and_audited(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3", user=OTHER)
    mock.wait("response", "Sorry, you are not on the access list for `evacuate`")
    assert not mock.find("chat.postMessage", "Drain host3?")
    refused = [a for a in bot.evac.journal.audit_log() if a.action == "evacuate.refused"]
    assert refused and refused[0].actor == f"slack:{OTHER}"


def test_forged_signature_gets_401(bot: Bot, mock: SlackMock) -> None:
    assert slash(bot, mock, "host3", signature="v0=" + "0" * 64).status == 401
    assert not mock.find("chat.postMessage")


def test_stale_timestamp_gets_401(bot: Bot, mock: SlackMock) -> None:
    assert slash(bot, mock, "host3", timestamp=int(time.time()) - 6 * 60).status == 401


def test_retried_delivery_and_double_click_start_one_job(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    value = preview_value(mock)
    press(bot, mock, "evac_confirm", value)
    press(bot, mock, "evac_confirm", value, retry=1)
    press(bot, mock, "evac_confirm", value)
    mock.wait("response", "Already")
    poll_until(lambda: any(not j.dry_run for j in bot.evac.journal.jobs()), 10, "the job")
    assert len([j for j in bot.evac.journal.jobs() if not j.dry_run]) == 1


def test_second_drain_of_a_host_answers_already_running(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    first = preview_value(mock)
    press(bot, mock, "evac_confirm", first)
    mock.wait("chat.postMessage", "Drain host3: job")
    slash(bot, mock, "host3")
    press(bot, mock, "evac_confirm", preview_value(mock, count=2))
    mock.wait("response", "already running: job")


def test_cancel_from_slack_stops_the_job(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    press(bot, mock, "evac_confirm", preview_value(mock))
    mock.wait("chat.postMessage", "Drain host3: job")
    poll_until(lambda: bot.evac.journal.unfinished_jobs(), 10, "the job to run")
    job = bot.evac.journal.unfinished_jobs()[0].id
    slash(bot, mock, f"cancel {job}", command="/evac")
    mock.wait("chat.update", "cancelled", timeout=20)
    assert bot.evac.journal.job(job).state == JobState.CANCELLED


def test_status_in_slack_marks_a_job_whose_evac_process_is_gone(bot: Bot, mock: SlackMock) -> None:
    from tests.unit.test_orphaned_jobs import orphan

    orphan(bot.evac.journal)
    slash(bot, mock, "status", command="/evac")
    assert "orphaned: its evac process is gone; run `evac resume`" in mock.wait("response", "orphaned").args["text"]


def test_unknown_host_gets_the_closest_known_name(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "hots3")
    mock.wait("response", "Unknown host `hots3`. (did you mean 'host3'?)")


def test_malformed_arguments_get_usage(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "")
    mock.wait("response", "Usage: `/evacuate HOST [reason]`")
    slash(bot, mock, "cancel now", command="/evac")
    mock.wait("response", "Usage: `/evac cancel JOB`")


def test_help_hides_commands_the_user_cannot_run(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "help", user=OTHER, command="/evac")
    call = mock.wait("response", "*evac*")
    assert "/evac status" in call.args["text"] and "/evacuate" not in call.args["text"]


def test_anyone_may_look_at_the_storm_brake_but_only_the_brake_rule_releases_it(bot: Bot, mock: SlackMock) -> None:
    bot.evac.journal.engage_brake("2 of 3 hosts down within 120 s")
    slash(bot, mock, "brake", user=OTHER, command="/evac")
    mock.wait("response", "storm brake engaged: 2 of 3 hosts down")
    slash(bot, mock, "brake release", user=OTHER, command="/evac")
    mock.wait("response", "you are not on the access list for `brake`")
    assert bot.evac.journal.brake() is not None
    slash(bot, mock, "brake release", command="/evac")
    mock.wait("response", "released the storm brake")
    assert bot.evac.journal.brake() is None
    assert bot.evac.journal.audit_log()[0].action == "brake.release"


def test_slack_config_names_file_line_and_field_for_bad_input() -> None:
    bad = "slack:\n  bot_token: xoxb-inline\n"
    with pytest.raises(ConfigError, match="^evac.yaml:2: slack.bot_token: secrets are given as env:NAME or file:PATH"):
        parse_slack(load_text(bad, "evac.yaml")["slack"], "evac.yaml")
    names = "slack:\n  acl:\n    evacuate: {users: [alice]}\n"
    with pytest.raises(ConfigError, match="^evac.yaml:3: slack.acl.evacuate.users: expected a list of Slack IDs"):
        parse_slack(load_text(names, "evac.yaml")["slack"], "evac.yaml")


def test_approval_gate_is_satisfied_by_a_listed_approver_in_slack(bot: Bot, mock: SlackMock) -> None:
    job = bot.launch(bot.evac.jobs.start("gated", {}, Actor(Channel.CLI, "test")), "C1", "Gated")
    value = button_value(mock.wait("chat.postMessage", "waits for approval"), "evac_approve")
    press(bot, mock, "evac_approve", value, user=OTHER)
    mock.wait("response", "not among this step's approvers")
    press(bot, mock, "evac_approve", value, user=OPS)
    poll_until(lambda: (j := bot.evac.journal.job(job)) is not None and j.finished, 10, "the gated job")
    assert bot.evac.journal.approved_by(job, "go") == f"slack:{OPS}"


# ---------------------------------------------------------------- the front door


def test_a_confirmed_drain_is_started_and_audited_by_the_front_door_with_the_configured_runbook(
    bot: Bot, mock: SlackMock, drain: FakeDrain
) -> None:
    slash(bot, mock, "host3 kernel update")
    press(bot, mock, "evac_confirm", preview_value(mock))
    mock.wait("chat.postMessage", "Drain host3: job")
    run = next(a for a in bot.evac.journal.audit_log() if a.action == "run")
    assert (run.actor, run.target, run.detail["runbook"]) == (f"slack:{OPS}", "host3", "drain-test")
    assert run.detail["params"]["reason"] == "kernel update"


def test_manual_fence_records_the_host_fenced_and_fails_it_over(bot: Bot, mock: SlackMock) -> None:
    press(bot, mock, "evac_fence_manual", failed_fence(bot, mock))
    text = mock.wait("response", "confirmed host4 is off").args["text"]
    assert bot.evac.journal.host_states()["host4"].state == HostMode.FENCED
    job = bot.evac.journal.job(int(text.rsplit("job ", 1)[1].rstrip(").")))
    assert job is not None and job.runbook == "failover-test" and job.target == "host4"
    audit = bot.evac.journal.audit_log()
    fenced = next(a for a in audit if a.action == "fence.manual")
    run = next(a for a in audit if a.action == "run")
    assert (fenced.actor, run.actor, run.detail["job"]) == (f"slack:{OPS}", f"slack:{OPS}", job.id)


def test_manual_fence_of_a_host_that_answers_is_refused(bot: Bot, mock: SlackMock, drain: FakeDrain) -> None:
    drain.unfenceable = {"host3"}
    press(bot, mock, "evac_fence_manual", failed_fence(bot, mock, "host3"))
    mock.wait("response", "host3 answers on its libvirt port: it is not off")
    assert "host3" not in bot.evac.journal.host_states()
    assert len(bot.evac.journal.jobs()) == 1  # the failover whose fence failed, and no other


# ---------------------------------------------------------------- findings


def test_a_confirm_refused_by_the_lock_is_not_announced_as_confirmed(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    press(bot, mock, "evac_confirm", preview_value(mock))
    mock.wait("chat.postMessage", "Drain host3: job")
    slash(bot, mock, "host3")
    press(bot, mock, "evac_confirm", preview_value(mock, count=2))
    mock.wait("response", "already running: job")
    settle(bot)
    assert len(mock.find("chat.update", "confirmed by")) == 1


def test_confirm_drains_the_previewed_host_whatever_the_button_value_says(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    token = preview_value(mock)
    assert "host3" not in token  # the buttons carry the preview's token, nothing more
    forged = json.dumps({"host": "host2", "reason": "forged", "token": token})
    press(bot, mock, "evac_confirm", forged)
    mock.wait("chat.postMessage", "Drain host3: job")
    [job] = [j for j in bot.evac.journal.jobs() if not j.dry_run]
    assert job.target == "host3" and job.params["reason"] != "forged"


def test_a_button_naming_no_stored_preview_starts_nothing(bot: Bot, mock: SlackMock) -> None:
    press(bot, mock, "evac_confirm", json.dumps({"host": "host2", "token": "made-up"}))
    mock.wait("response", "This preview expired")
    assert not [j for j in bot.evac.journal.jobs() if not j.dry_run]


def test_cancelling_a_preview_needs_the_evacuate_rule(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    press(bot, mock, "evac_cancel_preview", preview_value(mock, action="evac_cancel_preview"), user=OTHER)
    mock.wait("response", "Sorry, you are not on the access list for `evacuate`")
    assert bot.evac.journal.audit_log()[0].action == "evacuate.refused"
    press(bot, mock, "evac_confirm", preview_value(mock))  # the preview is still there
    mock.wait("chat.postMessage", "Drain host3: job")
    assert not mock.find("chat.update", "not started")


def test_cancelling_a_preview_forgets_it(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    press(bot, mock, "evac_cancel_preview", preview_value(mock, action="evac_cancel_preview"))
    mock.wait("chat.update", "Drain of *host3* not started")
    press(bot, mock, "evac_confirm", preview_value(mock))
    mock.wait("response", "This preview expired")
    settle(bot)
    assert [a.action for a in bot.evac.journal.audit_log()] == ["preview.cancel"]  # the late click did nothing


def test_a_user_removed_from_a_group_loses_its_rights_when_the_group_cache_expires(
    bot: Bot, mock: SlackMock, clock: Clock
) -> None:
    slash(bot, mock, "host3", user=GROUPIE)
    mock.wait("chat.postMessage", "Drain host3?")
    mock.groups = {"SOPS": []}
    clock.now += bot.config.group_cache_seconds
    slash(bot, mock, "host3", user=GROUPIE)
    mock.wait("response", "Sorry, you are not on the access list for `evacuate`")
    assert len(mock.find("usergroups.list")) == 2


def test_group_memberships_are_cached_until_they_expire(bot: Bot, mock: SlackMock, clock: Clock) -> None:
    for count in (1, 2):  # one after the other: two lookups at once may both ask Slack
        slash(bot, mock, "host3", user=GROUPIE)
        preview_value(mock, count)
        clock.now += bot.config.group_cache_seconds - 1
    assert len(mock.find("usergroups.list")) == 1


@pytest.mark.parametrize("kind", ["subteam_members_changed", "subteam_updated"])
def test_a_user_group_change_in_slack_drops_the_group_cache_at_once(bot: Bot, mock: SlackMock, kind: str) -> None:
    slash(bot, mock, "host3", user=GROUPIE)
    mock.wait("chat.postMessage", "Drain host3?")
    assert bot.groups_cached
    mock.groups = {"SOPS": []}
    assert event(bot, kind, subteam_id="SOPS").status == 200
    poll_until(lambda: not bot.groups_cached, 10, f"{kind} to drop the cache")
    slash(bot, mock, "host3", user=GROUPIE)
    mock.wait("response", "Sorry, you are not on the access list for `evacuate`")


BUTTONS = {
    "evac_confirm": "evacuate",
    "evac_cancel_preview": "evacuate",
    "evac_cancel_job": "cancel",
    "evac_approve": "approve",
    "evac_fence_manual": "fence",
}


def posted_button(bot: Bot, mock: SlackMock, action: str) -> str:
    """The value of a button as the bot posted it, for a user allowed to press it."""
    if action in ("evac_confirm", "evac_cancel_preview"):
        slash(bot, mock, "host3")
        return preview_value(mock, action=action)
    if action == "evac_cancel_job":
        slash(bot, mock, "host3")
        press(bot, mock, "evac_confirm", preview_value(mock))
        return button_value(mock.wait("chat.postMessage", "Drain host3: job"), action)
    if action == "evac_approve":
        bot.launch(bot.evac.jobs.start("gated-open", {}, Actor(Channel.CLI, "test")), "C1", "Gated")
        return button_value(mock.wait("chat.postMessage", "waits for approval"), action)
    return failed_fence(bot, mock)  # the fence alert's button names the failover whose fence failed


@pytest.mark.parametrize("action", BUTTONS)
def test_every_button_checks_access_again_when_pressed(bot: Bot, mock: SlackMock, action: str) -> None:
    value = posted_button(bot, mock, action)
    assert bot.groups_of(GROUPIE) == {"SOPS"}  # allowed when the button was posted
    mock.groups = {"SOPS": []}
    event(bot, "subteam_members_changed", subteam_id="SOPS")
    poll_until(lambda: not bot.groups_cached, 10, "the group cache to be dropped")
    press(bot, mock, action, value, user=GROUPIE)
    mock.wait("response", f"Sorry, you are not on the access list for `{BUTTONS[action]}`")
    settle(bot)
    refused = [a for a in bot.evac.journal.audit_log() if a.actor == f"slack:{GROUPIE}"]
    assert [a.action for a in refused] == [f"{BUTTONS[action]}.refused"]


def test_group_cache_seconds_is_a_slack_setting_with_file_and_line_errors() -> None:
    good = parse_slack(load_text("slack:\n  group_cache_seconds: 60\n", "evac.yaml")["slack"], "evac.yaml")
    assert good.group_cache_seconds == 60 and SlackConfig().group_cache_seconds == 300
    bad = "slack:\n  mode: http\n  group_cache_seconds: soon\n"
    with pytest.raises(ConfigError, match="^evac.yaml:3: slack.group_cache_seconds: expected seconds >= 0"):
        parse_slack(load_text(bad, "evac.yaml")["slack"], "evac.yaml")


def test_the_manifest_subscribes_to_user_group_changes() -> None:
    import yaml

    import evac_bots

    manifest = yaml.safe_load((Path(evac_bots.__file__).parent / "manifest.yaml").read_text())
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert {"subteam_members_changed", "subteam_updated"} <= set(events)


# ---------------------------------------------------------------- alerts and the manual fence


def test_a_failed_fence_alert_offers_the_manual_fence_button_for_its_failed_job(bot: Bot, mock: SlackMock) -> None:
    value = failed_fence(bot, mock)
    [job] = bot.evac.journal.jobs()
    assert value == str(job.id) and job.state == JobState.FAILED  # the job's id, not the host's name
    alert = mock.wait("chat.postMessage", "host4 could not be fenced")
    assert alert.args["channel"] == "C1" and alert.args.get("thread_ts")  # in the failover's thread


@pytest.mark.parametrize(
    "data",
    [{"kind": "no_snapshot", "host": "host4"}, {}],
    ids=["no snapshot", "no kind (notify.log, older plugins)"],
)
def test_an_alert_other_than_a_failed_fence_is_plain_text_in_the_alerts_channel(
    bot: Bot, mock: SlackMock, data: dict[str, str]
) -> None:
    bot.progress.track(7, "C1", "Failover host4")
    text = "ALERT: evac has no snapshot of what ran on host4, so nothing was restarted"
    bot.progress.evac_event(Event(EventKind.PROGRESS, 7, "plan", "", text, {"level": "alert", **data}))
    call = mock.wait("chat.postMessage", "no snapshot of what ran on host4")
    assert call.args["channel"] == "CALERTS" and not call.args.get("blocks")
    assert "job 7" in call.args["text"]
    assert not mock.find("chat.postMessage", "evac_fence_manual")


def test_losing_etcd_quorum_is_an_alert_in_the_alerts_channel_and_so_is_its_return(bot: Bot, mock: SlackMock) -> None:
    lost = "ALERT: etcd unavailable, nothing is fenced or restarted until it returns: no endpoint answers"
    bot.progress.evac_event(Event(EventKind.CLUSTER_UNAVAILABLE, 0, message=lost, data={"level": "alert"}))
    call = mock.wait("chat.postMessage", "nothing is fenced or restarted")
    assert call.args["channel"] == "CALERTS" and call.args["text"].startswith(":rotating_light: cluster.unavailable")
    bot.progress.evac_event(Event(EventKind.CLUSTER_AVAILABLE, 0, message="etcd answers again"))
    assert mock.wait("chat.postMessage", "etcd answers again").args["channel"] == "CALERTS"


def forged_host_name(bot: Bot) -> str:
    return "host4"  # what the button carried before: a host the clicker picks


def forged_drain_job(bot: Bot) -> str:
    """A drain that failed at a step it calls fence: failed, but not a failover."""
    started = bot.evac.jobs.start("drain-test", {"host": "host3"}, Actor(Channel.CLI, "test"), "host3")
    bot.evac.journal.save_step(started.job, "fence", StepState.FAILED, {}, "forged")
    bot.evac.journal.finish_job(started.job, JobState.FAILED, "forged")
    return str(started.job)


def failover_that_fenced(bot: Bot) -> str:
    started = bot.evac.jobs.fail_over("host3", Actor(Channel.CLI, "test"), "test")
    assert bot.evac.jobs.run(started).state == JobState.SUCCEEDED
    return str(started.job)


def no_such_job(bot: Bot) -> str:
    return "999"


def a_number_too_big_for_the_journal(bot: Bot) -> str:
    return "9" * 30


@pytest.mark.parametrize(
    "forge", [forged_host_name, forged_drain_job, failover_that_fenced, no_such_job, a_number_too_big_for_the_journal]
)
def test_a_manual_fence_button_not_naming_a_failover_whose_fence_failed_starts_nothing(
    bot: Bot, mock: SlackMock, forge: Callable[[Bot], str]
) -> None:
    value = forge(bot)
    before = {j.id for j in bot.evac.journal.jobs()}
    press(bot, mock, "evac_fence_manual", value)
    mock.wait("response", "Nothing done")
    settle(bot)
    assert {j.id for j in bot.evac.journal.jobs()} == before
    assert "host4" not in bot.evac.journal.host_states() and "host3" not in bot.evac.journal.host_states()
    refused = [a for a in bot.evac.journal.audit_log() if a.action == "fence.manual.refused"]
    assert [(a.actor, a.target) for a in refused] == [(f"slack:{OPS}", value)]


# ---------------------------------------------------------------- previews expire


def test_a_confirm_after_the_preview_expired_starts_nothing(bot: Bot, mock: SlackMock, clock: Clock) -> None:
    slash(bot, mock, "host3")
    token = preview_value(mock)
    clock.now += bot.config.preview_seconds
    press(bot, mock, "evac_confirm", token)
    mock.wait("response", "This preview expired")
    settle(bot)
    assert not [j for j in bot.evac.journal.jobs() if not j.dry_run]
    assert token not in bot.previews


def test_a_preview_can_be_confirmed_until_it_expires(bot: Bot, mock: SlackMock, clock: Clock) -> None:
    slash(bot, mock, "host3")
    token = preview_value(mock)
    clock.now += bot.config.preview_seconds - 1
    press(bot, mock, "evac_confirm", token)
    mock.wait("chat.postMessage", "Drain host3: job")


def test_expired_previews_are_dropped_from_memory(bot: Bot, mock: SlackMock, clock: Clock) -> None:
    slash(bot, mock, "host3")
    preview_value(mock)
    clock.now += bot.config.preview_seconds
    slash(bot, mock, "host2")
    second = preview_value(mock, count=2)
    assert set(bot.previews) == {second}


def test_preview_seconds_is_a_slack_setting_with_file_and_line_errors() -> None:
    good = parse_slack(load_text("slack:\n  preview_seconds: 60\n", "evac.yaml")["slack"], "evac.yaml")
    assert good.preview_seconds == 60 and SlackConfig().preview_seconds == 900
    for value in ("0", "soon", "-5"):
        bad = f"slack:\n  mode: http\n  preview_seconds: {value}\n"
        with pytest.raises(ConfigError, match="^evac.yaml:3: slack.preview_seconds: expected seconds > 0"):
            parse_slack(load_text(bad, "evac.yaml")["slack"], "evac.yaml")


# ---------------------------------------------------------------- config strings


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("mode: off", 'slack.mode: expected a string; YAML reads off as false — quote it: "off"'),
        ("alerts_channel: no", 'slack.alerts_channel: expected a string; YAML reads no as false — quote it: "no"'),
        ("api_url: yes", 'slack.api_url: expected a string; YAML reads yes as true — quote it: "yes"'),
        ("alerts_channel: 12", "slack.alerts_channel: expected a string, got int 12"),
    ],
)
def test_a_yaml_boolean_for_a_slack_string_setting_is_refused_with_the_quoting_fix(setting: str, expected: str) -> None:
    text = f"slack:\n  bot_token: env:SLACK_BOT_TOKEN\n  {setting}\n"
    with pytest.raises(ConfigError) as raised:
        parse_slack(load_text(text, "evac.yaml")["slack"], "evac.yaml")
    assert str(raised.value) == f"evac.yaml:3: {expected}"


# ---------------------------------------------------------------- user groups


def test_a_slow_user_group_lookup_does_not_block_other_listeners(bot: Bot, mock: SlackMock) -> None:
    gate = mock.held["usergroups.list"] = threading.Event()
    found: list[set[str]] = []
    lookups = [threading.Thread(target=lambda: found.append(bot.groups_of(GROUPIE))) for _ in range(2)]
    try:
        lookups[0].start()
        mock.wait("usergroups.list")
        lookups[1].start()
        poll_until(lambda: len(mock.find("usergroups.list")) == 2, 5, "a second lookup while the first is slow")
    finally:
        gate.set()
        for lookup in lookups:
            if lookup.ident is not None:
                lookup.join(10)
    assert found == [{"SOPS"}, {"SOPS"}]


def test_a_group_change_during_a_lookup_is_not_cached_over_by_its_older_answer(bot: Bot, mock: SlackMock) -> None:
    gate = mock.held["usergroups.list"] = threading.Event()
    lookup = threading.Thread(target=bot.groups_of, args=(GROUPIE,))
    try:
        lookup.start()
        mock.wait("usergroups.list")
        forget = threading.Thread(target=bot.forget_groups)
        forget.start()
        forget.join(5)
        assert not forget.is_alive()  # the group-change listener is not held up by the lookup
    finally:
        gate.set()
        lookup.join(10)
    assert not bot.groups_cached


# ---------------------------------------------------------------- audit


def test_a_click_is_audited_once_by_the_front_door_not_again_by_the_access_check(bot: Bot, mock: SlackMock) -> None:
    slash(bot, mock, "host3")
    press(bot, mock, "evac_confirm", preview_value(mock))
    value = button_value(mock.wait("chat.postMessage", "Drain host3: job"), "evac_cancel_job")
    press(bot, mock, "evac_cancel_job", value)
    mock.wait("response", f"cancelled job {value}")
    settle(bot)
    actions = [a.action for a in bot.evac.journal.audit_log()]
    assert sorted(actions) == ["cancel", "run"]


# ---------------------------------------------------------------- /evac doctor


class FakeChecks:
    """Doctor checks as a plugin registers them: host2 has no lock manager; the clock
    check never applies. Nothing touches a host."""

    def __init__(self) -> None:
        self.examined: list[str] = []

    def lock_manager(self, ctx: DoctorContext, host: HostSpec) -> Finding:
        self.examined.append(host.name)
        if host.name == "host2":
            return Finding(Result.FAIL, "qemu.conf names no lock_manager", "set lock_manager = lockd in qemu.conf")
        return Finding(Result.PASS, "virtlockd leases every disk")

    @hookimpl
    def evac_doctor_checks(self) -> list[DoctorCheck]:
        return [
            DoctorCheck("lock_manager", self.lock_manager, safety=True, timeout=10),
            DoctorCheck("clock", lambda ctx, host: Finding(Result.SKIP, "no ssh settings"), timeout=10),
        ]


@pytest.fixture
def checks(bot: Bot) -> Iterator[FakeChecks]:
    """The fake checks, registered on the bot's plugin manager, and a doctor rule for OPS."""
    fake = FakeChecks()
    bot.evac.pm.register(fake, name="fake-doctor-checks")
    bot.config = replace(bot.config, acl={**bot.config.acl, "doctor": Rule(users=frozenset({OPS}))})
    try:
        yield fake
    finally:
        settle(bot)  # no run is still on its way
        bot.evac.pm.unregister(fake)


def posted_text(call: Any) -> str:
    found = call.args["blocks"]
    return "\n".join(b["text"]["text"] for b in (json.loads(found) if isinstance(found, str) else found))


def test_evac_doctor_posts_every_hosts_checks_with_the_failures_fix_and_a_summary(
    bot: Bot, mock: SlackMock, checks: FakeChecks
) -> None:
    slash(bot, mock, "doctor", command="/evac")
    mock.wait("response", "Examining 4 hosts with 2 checks")
    text = posted_text(mock.wait("chat.postMessage", "1 check failed", timeout=20))
    assert (
        "`host2` `lock_manager *` :x: fail — qemu.conf names no lock_manager — *fix:* set lock_manager = lockd" in text
    )
    assert "`host1` `lock_manager *` :white_check_mark: pass — virtlockd leases every disk" in text
    assert "`host3` `clock` :heavy_minus_sign: skip — no ssh settings" in text
    assert text.endswith("4 hosts: 1 check failed (host2 lock_manager): set lock_manager = lockd in qemu.conf")
    assert sorted(checks.examined) == ["host1", "host2", "host3", "host4"]


def test_evac_doctor_host_examines_that_host_only_and_records_its_run_in_the_journal(
    bot: Bot, mock: SlackMock, checks: FakeChecks
) -> None:
    slash(bot, mock, "doctor host2", command="/evac")
    mock.wait("chat.postMessage", "1 host: 1 check failed", timeout=20)
    assert checks.examined == ["host2"]
    run = last_doctor(bot.evac.journal, "host2")
    assert run is not None and [c.name for c in run.failed] == ["lock_manager"]
    assert run.safe_to_fence()[0] is False
    assert last_doctor(bot.evac.journal, "host1") is None


def test_evac_doctor_is_audited_as_the_slack_user(bot: Bot, mock: SlackMock, checks: FakeChecks) -> None:
    slash(bot, mock, "doctor host2", command="/evac")
    mock.wait("chat.postMessage", "1 check failed", timeout=20)
    [audit] = [a for a in bot.evac.journal.audit_log() if a.action == "doctor"]
    assert (audit.actor, audit.target, audit.detail["hosts"]) == (f"slack:{OPS}", "host2", ["host2"])


def test_evac_doctor_of_an_unknown_host_names_it_with_the_closest_known_name(
    bot: Bot, mock: SlackMock, checks: FakeChecks
) -> None:
    slash(bot, mock, "doctor hots2", command="/evac")
    mock.wait("response", "Unknown host `hots2`. (did you mean 'host2'?)")
    settle(bot)
    assert not checks.examined and not mock.find("chat.postMessage")


def test_evac_doctor_refuses_a_user_without_the_doctor_rule_and_runs_nothing(
    bot: Bot, mock: SlackMock, checks: FakeChecks
) -> None:
    slash(bot, mock, "doctor", user=OTHER, command="/evac")
    mock.wait("response", "Sorry, you are not on the access list for `doctor`")
    settle(bot)
    assert not checks.examined and not mock.find("chat.postMessage")
    assert [a.action for a in bot.evac.journal.audit_log()] == ["doctor.refused"]
    assert last_doctor(bot.evac.journal, "host1") is None


def test_evac_doctor_is_closed_to_everyone_until_a_rule_opens_it(bot: Bot, mock: SlackMock) -> None:
    fake = FakeChecks()
    bot.evac.pm.register(fake, name="fake-doctor-checks")
    try:
        slash(bot, mock, "doctor", command="/evac")
        mock.wait("response", "`doctor` has no access rule: nobody may run it yet")
        settle(bot)
    finally:
        bot.evac.pm.unregister(fake)
    assert not fake.examined


def test_help_lists_doctor_only_for_who_may_run_it(bot: Bot, mock: SlackMock, checks: FakeChecks) -> None:
    slash(bot, mock, "help", command="/evac")
    slash(bot, mock, "help", user=OTHER, command="/evac")
    settle(bot)
    texts = {call.args["text"] for call in mock.find("response", "*evac*")}
    assert sum("`/evac doctor [HOST]`" in text for text in texts) == 1 and len(texts) == 2


def test_a_long_doctor_table_is_split_within_slacks_section_and_block_limits() -> None:
    long = "x" * 5000
    runs = [
        DoctorRun(
            f"host{h}", 0.0, tuple(Check(f"check{c}", Result.FAIL, long, "fix <it> & " + long) for c in range(60))
        )
        for h in range(20)
    ]
    messages = doctor_messages(runs, "<@UOPS>")
    sections = [b["text"]["text"] for _, message in messages for b in message]
    assert len(messages) > 1 and all(len(message) <= 50 for _, message in messages)
    assert all(len(text) <= 3000 for text in sections)
    rows = [line for text in sections for line in text.splitlines() if line.startswith("`host")]
    assert len(rows) == 20 * 60  # every row, each in one piece
    assert "fix &lt;it&gt; &amp; xxx" in rows[0] and rows[0].endswith("…")
    assert sections[-1] == (
        ":x: 20 hosts: 1200 checks failed (host0 check0, host0 check1, host0 check2, host0 check3, host0 check4, …): "
        "the fixes are in the table"
    )


def test_a_doctor_run_without_failures_says_so_in_its_summary() -> None:
    passed = DoctorRun("host1", 0.0, (Check("clock", Result.PASS, "in sync"),))
    skipped = DoctorRun("host2", 0.0, (Check("clock", Result.SKIP, "no ssh"),))
    assert doctor_summary([passed]) == "1 host: every check passed"
    assert doctor_summary([passed, skipped]) == "2 hosts: no check failed (0 warned, 1 skipped)"


def test_a_disarm_reason_from_another_channel_cannot_ping_the_alerts_channel(bot: Bot, mock: SlackMock) -> None:
    message = "HA disarmed by cli:ops: <!channel> <@U999> <https://evil|click>"
    bot.progress.evac_event(Event(EventKind.HA_DISARMED, 0, item="cli:ops", message=message))
    call = mock.wait("chat.postMessage", "HA disarmed by cli:ops")
    assert "<!channel>" not in call.args["text"] and "&lt;!channel&gt;" in call.args["text"]
    assert "<@U999>" not in call.args["text"] and "<https://" not in call.args["text"]
