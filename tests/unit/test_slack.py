"""The Slack bot, tested as slack-bolt tests itself: a local mock Web API server and
correctly signed requests dispatched to the app. The drain here is an inline plugin:
the Slack side is the point (the lab drain has its own tests)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from evac import Action, StepContext, hookimpl
from evac.app import App
from evac.errors import ConfigError
from evac.plugins import plugin_manager
from evac.yamldoc import load_text
from evac_bots.config import Rule, SlackConfig, parse_slack
from evac_bots.slackapp import Bot
from tests.conftest import poll_until
from tests.slackmock import SlackMock, action_body, command_body, signed, slack_mock

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


class FakeDrain:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.moved: list[str] = []
        self.count = 3

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

    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [Action("fake.plan", self.plan, plan=self.plan), Action("fake.move", self.move)]


@pytest.fixture
def mock() -> Iterator[SlackMock]:
    with slack_mock(groups={"SOPS": [GROUPIE]}) as m:
        yield m


@pytest.fixture
def drain() -> FakeDrain:
    return FakeDrain()


@pytest.fixture
def bot(tmp_path: Path, mock: SlackMock, drain: FakeDrain) -> Iterator[Bot]:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "hosts:\n" + "".join(f"  - {{name: host{i}, uri: 'qemu+tcp://127.0.0.1:9/system'}}\n" for i in (1, 2, 3))
    )
    (tmp_path / "drain-test.yaml").write_text(RUNBOOK)
    pm = plugin_manager(load_entrypoints=False, modules=["evac_plugins.basics"])
    pm.register(drain)
    app = App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=pm)
    acl = {"evacuate": Rule(users=frozenset({OPS}), groups=frozenset({"SOPS"})), "cancel": Rule(users=frozenset({OPS}))}
    acl["brake"] = Rule(users=frozenset({OPS}))
    config = SlackConfig(bot_token="xoxb-test", signing_secret=SECRET, mode="http", alerts_channel="CALERTS", acl=acl)
    the_bot = Bot(
        app,
        config,
        client=WebClient(token="xoxb-test", base_url=mock.url),
        drain_runbook=str(tmp_path / "drain-test.yaml"),
    )
    the_bot.progress.min_interval = 0.05
    yield the_bot
    drain.release.set()
    the_bot.close()


def slash(bot: Bot, mock: SlackMock, text: str, user: str = OPS, command: str = "/evacuate", **kw: Any) -> Any:
    return bot.bolt.dispatch(signed(SECRET, command_body(command, text, user, mock.response_url), **kw))


def press(bot: Bot, mock: SlackMock, action: str, value: str, user: str = OPS, **kw: Any) -> Any:
    return bot.bolt.dispatch(signed(SECRET, action_body(action, value, user, mock.response_url), **kw))


def preview_value(mock: SlackMock, count: int = 1) -> str:
    poll_until(lambda: len(mock.find("chat.postMessage", "Confirm drain")) >= count, 10, f"preview number {count}")
    call = mock.find("chat.postMessage", "Confirm drain")[count - 1]
    blocks = json.loads(call.args["blocks"]) if isinstance(call.args["blocks"], str) else call.args["blocks"]
    button = next(
        e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "evac_confirm"
    )
    assert "confirm" in button  # a Block Kit confirmation dialog guards it
    return str(button["value"])


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
    assert bot.evac.journal.job(job).state == "cancelled"  # type: ignore[union-attr]


def test_status_in_slack_marks_a_job_whose_evac_process_is_gone(bot: Bot, mock: SlackMock) -> None:
    from tests.unit.test_orphaned_jobs import orphan

    orphan(bot.evac.journal)  # type: ignore[arg-type]
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


def test_approval_gate_is_satisfied_by_a_listed_approver_in_slack(bot: Bot, mock: SlackMock, tmp_path: Path) -> None:
    book = tmp_path / "gated.yaml"
    book.write_text(
        "name: gated\nsteps:\n  - {id: go, action: notify.log, with: {text: done},"
        f" approval: {{text: 'Proceed?', approvers: [{OPS}]}}}}\n"
    )
    job = bot.start_job(str(book), {}, "", "C1", "Gated", actor=OPS)
    call = mock.wait("chat.postMessage", "waits for approval")
    blocks = json.loads(call.args["blocks"]) if isinstance(call.args["blocks"], str) else call.args["blocks"]
    value = blocks[-1]["elements"][0]["value"]
    press(bot, mock, "evac_approve", value, user=OTHER)
    mock.wait("response", "not among this step's approvers")
    press(bot, mock, "evac_approve", value, user=OPS)
    poll_until(lambda: (j := bot.evac.journal.job(job)) is not None and j.finished, 10, "the gated job")
    assert bot.evac.journal.approved_by(job, "go") == f"slack:{OPS}"


def test_evac_serve_mounts_the_bot_in_http_mode(
    tmp_path: Path, mock: SlackMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evac.config import load_config
    from evac.service import Service

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: host1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    (tmp_path / "evac.yaml").write_text(
        f"inventory: hosts.yaml\njournal: j.db\nlisten: {{port: 0}}\nmonitor: {{enabled: false}}\n"
        f"slack:\n  bot_token: env:SLACK_BOT_TOKEN\n  signing_secret: env:SLACK_SIGNING_SECRET\n  mode: http\n"
        f"  api_url: {mock.url}\n"
    )
    pm = plugin_manager()
    service = Service(load_config(tmp_path / "evac.yaml", pm), pm)
    try:
        raw = command_body("/evac", "help", OPS, mock.response_url)
        headers = {k: v[0] for k, v in signed(SECRET, raw).headers.items()}
        body = raw.encode()
        status, _, _ = service.http.routes[("POST", "/slack/events")]("POST", headers, body)
        assert status == 200
        mock.wait("response", "*evac*")
    finally:
        for extra in service.extras:
            extra.stop()
        service.http.server.server_close()
