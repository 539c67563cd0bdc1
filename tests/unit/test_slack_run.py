"""Runbooks from Slack: ``/evac run RUNBOOK key=value …`` by each runbook's own access rule,
``/evac return HOST`` and ``/evac rebalance`` by theirs, each a preview first (the
runbook's dry run) and a job only when confirmed. Test runbooks are registered as a plugin
registers them; the return and rebalance runbooks are stood in for at the front door, so
these tests ask only that the right runbook is asked for with the right params."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from evac.engine import JobResult
from evac.errors import ConfigError
from evac.jobs import Actor, Started
from evac.runbook import parse_runbook
from evac.states import JobState
from evac.yamldoc import load_text
from evac_bots import blocks
from evac_bots.config import Rule, parse_slack
from evac_bots.runs import parse_params, words_of
from evac_bots.slackapp import Bot
from tests.conftest import poll_until
from tests.slackmock import SlackMock, action_body, button_value, command_body, signed, slack_mock
from tests.unit.test_slack import (
    GROUPIE,
    OPS,
    OTHER,
    SECRET,
    Clock,
    FakeDrain,
    Runbooks,
    answering_port,
    running_bot,
    settle,
)

MORE = {
    "resize-test": """
name: resize-test
description: Move a host's guests (a test runbook with a plan step)
lock: "host:{{ params.host }}"
params:
  host: {type: host, required: true}
  count: {type: integer, default: 1, minimum: 1}
  force: {type: boolean, default: false}
  tags: {type: list, default: []}
  reason: {type: string, default: test}
steps:
  - {id: plan, action: fake.plan, with: {host: "{{ params.host }}"}}
  - id: migrate
    action: fake.move
    for_each: "{{ steps.plan.moves }}"
    with: {guest: "{{ item.guest }}", target: "{{ item.target }}"}
""",
    "notes-test": """
name: notes-test
params: {text: {type: string, required: true}}
steps:
  - {id: say, action: notify.log, with: {text: "{{ params.text }}"}}
  - {id: shout, action: notify.log, with: {text: "{{ params.text }}!"}, when: "{{ params.text == 'loud' }}"}
""",
    "secret-test": """
name: secret-test
steps:
  - {id: say, action: notify.log, with: {text: nobody may run this from Slack}}
""",
}
RUN_RULES = {
    "resize-test": Rule(users=frozenset({OPS}), groups=frozenset({"SOPS"})),
    "notes-test": Rule(users=frozenset({OPS}), channels=frozenset({"C1"})),
    "gated-open": Rule(users=frozenset({OPS})),
    "maintenance-return": Rule(users=frozenset({OTHER})),  # grants /evac run, not /evac return
}


@pytest.fixture
def books(tmp_path: Path) -> Path:
    path = tmp_path / "more-runbooks"
    path.mkdir()
    for name, text in MORE.items():
        (path / f"{name}.yaml").write_text(text)
    return path


@pytest.fixture
def mock() -> Iterator[SlackMock]:
    with slack_mock(groups={"SOPS": [GROUPIE]}) as m:
        yield m


@pytest.fixture
def drain() -> FakeDrain:
    return FakeDrain()


@pytest.fixture
def bot(tmp_path: Path, mock: SlackMock, drain: FakeDrain, books: Path) -> Iterator[Bot]:
    """The bot of test_slack.py, with the test runbooks above and rules for them: OPS may
    return and rebalance, and run what RUN_RULES says."""
    with answering_port() as port, running_bot(tmp_path, mock, drain, Clock(), port) as the_bot:
        the_bot.evac.pm.register(Runbooks(books), name="more-runbooks")
        ops = Rule(users=frozenset({OPS}))
        acl = {**the_bot.config.acl, "return": ops, "rebalance": ops}
        the_bot.config = replace(the_bot.config, acl=acl, runbook_acl=RUN_RULES)
        yield the_bot


def evac(bot: Bot, mock: SlackMock, text: str, user: str = OPS, channel: str = "C1", answer_to: str = "") -> Any:
    """``/evac TEXT``; its answers are recorded as ``response``, or as ``answer_to`` when given."""
    url = mock.response_url + (f"/{answer_to}" if answer_to else "")
    return bot.bolt.dispatch(signed(SECRET, command_body("/evac", text, user, url, channel)))


def press(bot: Bot, mock: SlackMock, action: str, value: str, user: str = OPS) -> Any:
    return bot.bolt.dispatch(signed(SECRET, action_body(action, value, user, mock.response_url)))


def previewed(mock: SlackMock, title: str, count: int = 1) -> tuple[str, str]:
    """The text of preview number ``count`` titled ``title``, and its Confirm button's token."""
    poll_until(lambda: len(mock.find("chat.postMessage", f"{title}?")) >= count, 10, f"preview {count} of {title}")
    call = mock.find("chat.postMessage", f"{title}?")[count - 1]
    return json.dumps(call.args, ensure_ascii=False), button_value(call, "evac_run_confirm")


def jobs(bot: Bot) -> list[Any]:
    return [j for j in bot.evac.journal.jobs() if not j.dry_run]


def answer(bot: Bot, mock: SlackMock, text: str) -> str:
    """The one ephemeral answer the bot gives to ``/evac TEXT`` (every listener finished)."""
    evac(bot, mock, text)
    settle(bot)
    [call] = mock.find("response")
    return str(call.args["text"])


# ---------------------------------------------------------------- /evac run: who may


def test_run_of_a_runbook_the_user_may_not_run_is_refused_audited_and_starts_nothing(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run resize-test host=host3", user=OTHER)
    text = mock.wait("response", "Sorry").args["text"]
    assert text == (
        "Sorry, you are not on the access list for runbook `resize-test`. "
        "Ask an evac admin to add your Slack ID to `slack.acl.run.runbooks.resize-test`."
    )
    settle(bot)
    assert not mock.find("chat.postMessage") and not bot.evac.journal.jobs()
    [refused] = bot.evac.journal.audit_log()
    assert (refused.actor, refused.action, refused.target) == (f"slack:{OTHER}", "run.refused", "resize-test")


def test_run_of_a_runbook_the_user_may_run_previews_it_then_confirm_starts_the_job(
    bot: Bot, mock: SlackMock, drain: FakeDrain
) -> None:
    evac(bot, mock, "run resize-test host=host3 count=2 tags=a,b")
    text, token = previewed(mock, "Run resize-test on host3")
    assert "vm0" in text and "-> host1" in text and "N+1: tight" in text  # the plan step's moves
    assert not jobs(bot)  # a preview starts nothing
    press(bot, mock, "evac_run_confirm", token)
    mock.wait("chat.postMessage", "Run resize-test on host3: job")
    mock.wait("chat.update", "confirmed by <@UOPS>")
    [job] = jobs(bot)
    assert (job.runbook, job.target) == ("resize-test", "host3")
    assert (job.params["count"], job.params["tags"], job.params["force"]) == (2, ["a", "b"], False)
    run = next(a for a in bot.evac.journal.audit_log() if a.action == "run")
    assert run.actor == f"slack:{OPS}"
    drain.release.set()
    mock.wait("chat.update", "succeeded", timeout=20)


def test_a_member_of_a_group_the_runbooks_rule_names_may_run_it(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run resize-test host=host3", user=GROUPIE)
    previewed(mock, "Run resize-test on host3")


def test_a_registered_runbook_without_a_rule_of_its_own_is_refused_to_everyone(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run secret-test")  # OPS may evacuate, cancel, return…: no rule grants another
    mock.wait("response", "runbook `secret-test` has no access rule: nobody may run it from Slack yet")
    settle(bot)
    assert not mock.find("chat.postMessage") and not bot.evac.journal.jobs()


def test_a_runbook_rule_naming_channels_refuses_the_others(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run notes-test text=hi", channel="C2")
    mock.wait("response", "runbook `notes-test` is not allowed in this channel")
    settle(bot)
    assert not mock.find("chat.postMessage")


def test_a_confirm_checks_the_runbooks_rule_again(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run resize-test host=host3", user=GROUPIE)
    _, token = previewed(mock, "Run resize-test on host3")
    mock.groups = {"SOPS": []}
    bot.forget_groups()
    press(bot, mock, "evac_run_confirm", token, user=GROUPIE)
    mock.wait("response", "not on the access list for runbook `resize-test`")
    settle(bot)
    assert not jobs(bot)
    assert [a.action for a in bot.evac.journal.audit_log()] == ["run.refused"]


# ---------------------------------------------------------------- /evac run: what it shows and starts


def test_a_runbook_without_a_plan_step_previews_the_steps_it_would_run(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, 'run notes-test text="kernel update"')
    text, _ = previewed(mock, "Run notes-test")
    assert "Steps it would run" in text
    assert "1. `say` notify.log" in text and "`text=kernel update`" in text
    assert "2. `shout` notify.log — skipped (`when` is false)" in text


@pytest.mark.parametrize("quoted", ['"kernel update"', "\u201ckernel update\u201d"], ids=["straight", "curly"])
def test_a_quoted_value_keeps_its_spaces_into_the_job(bot: Bot, mock: SlackMock, quoted: str) -> None:
    evac(bot, mock, f"run notes-test text={quoted}")
    _, token = previewed(mock, "Run notes-test")
    press(bot, mock, "evac_run_confirm", token)
    poll_until(lambda: jobs(bot), 10, "the job")
    assert jobs(bot)[0].params["text"] == "kernel update"


def test_a_double_click_on_confirm_starts_one_job(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run notes-test text=hi")
    _, token = previewed(mock, "Run notes-test")
    press(bot, mock, "evac_run_confirm", token)
    press(bot, mock, "evac_run_confirm", token)
    mock.wait("response", "Already")
    settle(bot)
    assert len(jobs(bot)) == 1


def test_a_plan_changed_since_the_preview_is_shown_again_and_nothing_starts(
    bot: Bot, mock: SlackMock, drain: FakeDrain
) -> None:
    evac(bot, mock, "run resize-test host=host3")
    _, token = previewed(mock, "Run resize-test on host3")
    drain.count = 4
    press(bot, mock, "evac_run_confirm", token)
    mock.wait("response", "The fleet changed since this preview")
    update = mock.wait("chat.update", "plan changed")
    assert "vm3" in json.dumps(update.args) and not jobs(bot)
    press(bot, mock, "evac_run_confirm", button_value(update, "evac_run_confirm"))
    poll_until(lambda: jobs(bot), 10, "the job of the new plan")


def test_cancelling_a_run_preview_forgets_it(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run notes-test text=hi")
    _, token = previewed(mock, "Run notes-test")
    press(bot, mock, "evac_run_cancel", token)
    mock.wait("chat.update", "Run notes-test (`notes-test`) not started")
    press(bot, mock, "evac_run_confirm", token)
    mock.wait("response", "This preview expired")
    settle(bot)
    assert not jobs(bot)
    assert [a.action for a in bot.evac.journal.audit_log()] == ["preview.cancel"]


def test_a_drain_button_cannot_confirm_a_run_preview(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run notes-test text=hi")
    _, token = previewed(mock, "Run notes-test")
    press(bot, mock, "evac_confirm", token)
    mock.wait("response", "This preview expired")
    settle(bot)
    assert not jobs(bot) and token in bot.previews  # the run's own button still works


def test_a_gated_runbook_run_from_slack_waits_for_approval_then_runs(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run gated-open")
    text, token = previewed(mock, "Run gated-open")
    assert "waits for approval" in text
    press(bot, mock, "evac_run_confirm", token)
    value = button_value(mock.wait("chat.postMessage", "evac_approve"), "evac_approve")
    press(bot, mock, "evac_approve", value)
    poll_until(lambda: (j := jobs(bot)) and j[0].state == JobState.SUCCEEDED, 10, "the approved job")
    assert bot.evac.journal.approved_by(jobs(bot)[0].id, "go") == f"slack:{OPS}"


# ---------------------------------------------------------------- /evac run: bad input, one line each


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run resize-test host=host3 cuont=2", "unknown param 'cuont' (did you mean 'count'?); `resize-test` takes:"),
        ("run resize-test count=2", "param 'host' is required: add host=…"),
        ("run resize-test host=host3 count=two", "param 'count': expected a whole number (type integer), got 'two'"),
        ("run resize-test host=host3 count=0", "param 'count': expected at least 1"),
        ("run resize-test host=host3 force=maybe", "param 'force': expected true or false"),
        ("run resize-test host=hots3", "unknown host 'hots3' (did you mean 'host3'?)"),
        ("run resize-test host3", "expected KEY=VALUE, got 'host3'"),
        ("run resize-test host=host3 host=host2", "param 'host' is given twice"),
        ('run notes-test text="unclosed', 'unbalanced quotes: close every " you open'),
        ("run resize-tset host=host3", "Unknown runbook `resize-tset` (did you mean 'resize-test'?). You may run:"),
        ("run", "Usage: `/evac run RUNBOOK [key=value …]`. You may run: `gated-open`, `notes-test`, `resize-test`"),
    ],
)
def test_bad_run_input_is_one_line_and_starts_nothing(bot: Bot, mock: SlackMock, text: str, expected: str) -> None:
    said = answer(bot, mock, text)
    assert expected in said and "\n" not in said
    assert not mock.find("chat.postMessage") and not bot.evac.journal.jobs()


def test_an_unknown_runbook_is_never_suggested_from_those_the_user_may_not_run(bot: Bot, mock: SlackMock) -> None:
    evac(bot, mock, "run resize-tset", user=GROUPIE)
    evac(bot, mock, "run notes-tset", user=GROUPIE)
    settle(bot)
    texts = sorted(c.args["text"] for c in mock.find("response"))
    assert texts == [
        "Unknown runbook `notes-tset`. You may run: `resize-test`",
        "Unknown runbook `resize-tset` (did you mean 'resize-test'?). You may run: `resize-test`",
    ]


def test_a_rule_for_a_runbook_gone_since_the_bot_started_is_an_error_at_use(
    bot: Bot, mock: SlackMock, books: Path
) -> None:
    (books / "notes-test.yaml").unlink()
    said = answer(bot, mock, "run notes-test text=hi")
    assert said.startswith("`/evac run notes-test`: unknown runbook 'notes-test'") and "\n" not in said


# ---------------------------------------------------------------- help


def test_help_lists_only_the_runbooks_and_commands_the_user_may_run(bot: Bot, mock: SlackMock) -> None:
    for user in (OPS, GROUPIE, OTHER):
        evac(bot, mock, "help", user=user, answer_to=user)
    settle(bot)
    ops, groupie, other = (str(mock.find(user)[0].args["text"]) for user in (OPS, GROUPIE, OTHER))
    assert "`/evac run RUNBOOK" in ops and "`/evac return HOST" in ops and "`/evac rebalance" in ops
    listed = [line.split("`")[1] for line in ops.splitlines() if line.startswith("    • ")]
    assert listed == ["gated-open", "notes-test", "resize-test"]
    assert "`resize-test` — Move a host's guests (a test runbook with a plan step) (params: host*, count" in ops
    assert [line.split("`")[1] for line in groupie.splitlines() if line.startswith("    • ")] == ["resize-test"]
    assert "/evac return" not in groupie
    assert "`maintenance-return`" in other  # its run rule: /evac run, not /evac return
    assert "/evac return" not in other and "/evac rebalance" not in other and "resize-test" not in other


# ---------------------------------------------------------------- return and rebalance


class FrontDoor:
    """Stands in for the front door's preview and start: records what the bot asks for and
    answers with ``plan``. A start records, then starts the harmless ``notes-test``, so the
    job the bot follows is real."""

    def __init__(self, bot: Bot, plan: Mapping[str, Any]) -> None:
        self.plan = dict(plan)
        self.real_start: Callable[..., Started] = bot.evac.jobs.start
        self.asked: list[tuple[str, str, dict[str, Any], str]] = []

    def preview(self, runbook: str, given: Mapping[str, Any], target: str = "") -> JobResult:
        self.asked.append(("preview", runbook, dict(given), target))
        return JobResult(0, JobState.SUCCEEDED, outputs={"plan": self.plan})

    def start(self, runbook: str, given: Mapping[str, Any], actor: Actor, target: str = "") -> Started:
        self.asked.append(("start", runbook, dict(given), target))
        return self.real_start("notes-test", {"text": "a stand-in"}, actor, target)


def front_door(bot: Bot, monkeypatch: pytest.MonkeyPatch, plan: Mapping[str, Any]) -> FrontDoor:
    door = FrontDoor(bot, plan)
    monkeypatch.setattr(bot.evac.jobs, "preview", door.preview)
    monkeypatch.setattr(bot.evac.jobs, "start", door.start)
    return door


def test_return_previews_maintenance_return_for_the_host_and_starts_it_on_confirm(
    bot: Bot, mock: SlackMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    move = {"guest": "web1", "memory_mib": 512, "source": "host1", "target": "host3", "strategy": "live"}
    door = front_door(bot, monkeypatch, {"moves": [move], "skipped": [{"guest": "db1", "reason": "stopped since"}]})
    evac(bot, mock, "return host3 concurrency=2")
    text, token = previewed(mock, "Return guests to host3")
    assert "web1" in text and "host1 -> host3" in text and "db1: stopped since" in text and "*1* skipped" in text
    press(bot, mock, "evac_run_confirm", token)
    mock.wait("chat.postMessage", "Return guests to host3: job")
    asked = ("maintenance-return", {"host": "host3", "concurrency": 2}, "host3")
    assert door.asked[0] == ("preview", *asked) and door.asked[-1] == ("start", *asked)


def test_rebalance_previews_the_rebalance_runbook_with_the_load_before_and_after(
    bot: Bot, mock: SlackMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    move = {"guest": "web1", "memory_mib": 512, "source": "host1", "target": "host2", "reason": "evens memory"}
    load = {"memory_pct": 80.0, "guests": 3}
    plan = {
        "moves": [move],
        "unplaceable": [{"guest": "big1", "memory_mib": 9000, "reason": "no host has room"}],
        "before": {"host1": load, "host2": {"memory_pct": 20.0, "guests": 1}},
        "after": {"host1": {"memory_pct": 55.0, "guests": 2}, "host2": {"memory_pct": 45.0, "guests": 2}},
        "summary": "1 move: memory load spread 60 -> 10 points (threshold 10)",
    }
    door = front_door(bot, monkeypatch, plan)
    evac(bot, mock, "rebalance threshold=5")
    text, token = previewed(mock, "Rebalance")
    assert "host1 -> host2      evens memory" in text and "big1: no host has room" in text
    assert "host1         80.0% ->  55.0%  (3 -> 2 guests)" in text and "spread 60 -> 10" in text
    press(bot, mock, "evac_run_confirm", token)
    mock.wait("chat.postMessage", "Rebalance: job")
    assert door.asked[0] == ("preview", "rebalance", {"threshold": 5.0}, "fleet")
    assert door.asked[-1] == ("start", "rebalance", {"threshold": 5.0}, "fleet")


@pytest.mark.parametrize("text", ["return host3", "rebalance"])
def test_return_and_rebalance_need_their_own_rule_which_a_run_rule_does_not_grant(
    bot: Bot, mock: SlackMock, text: str
) -> None:
    evac(bot, mock, text, user=OTHER)  # OTHER may /evac run maintenance-return
    command = text.split()[0]
    mock.wait("response", f"you are not on the access list for `{command}`")
    settle(bot)
    assert not mock.find("chat.postMessage")
    assert [a.action for a in bot.evac.journal.audit_log()] == [f"{command}.refused"]


def test_return_of_an_unknown_host_gets_the_closest_known_name(bot: Bot, mock: SlackMock) -> None:
    assert answer(bot, mock, "return hots3") == "Unknown host `hots3`. (did you mean 'host3'?)"


def test_return_with_a_param_the_runbook_lacks_is_one_line_with_the_closest_name(bot: Bot, mock: SlackMock) -> None:
    said = answer(bot, mock, "return host3 concurrancy=2")
    assert said.startswith("`/evac return host3`: unknown param 'concurrancy' (did you mean 'concurrency'?)")


# ---------------------------------------------------------------- reading the words


def test_words_group_double_quotes_and_keep_apostrophes() -> None:
    assert words_of('notes text="don\'t  panic" x=1') == ["notes", "text=don't  panic", "x=1"]
    assert words_of("reason=it's fine") == ["reason=it's", "fine"]


def test_params_are_read_by_their_declared_types() -> None:
    book = parse_runbook(load_text(MORE["resize-test"], "resize-test.yaml"), "resize-test.yaml")
    given = parse_params(book, ["host=h1", "count=3", "force=yes", "tags=[a, b]", "reason=no"])
    assert given == {"host": "h1", "count": 3, "force": True, "tags": ["a", "b"], "reason": "no"}


def test_a_run_preview_stays_within_slacks_limits_however_long_its_input() -> None:
    book = parse_runbook(load_text(MORE["resize-test"], "resize-test.yaml"), "resize-test.yaml")
    book = replace(book, description="d " * 3000)
    move = {"guest": "vm" * 50, "memory_mib": 1, "source": "a", "target": "b", "reason": "r" * 500}
    plan = {"moves": [move] * 500, "unplaceable": [{"guest": "g", "reason": "x" * 9000}], "warnings": ["w" * 9000]}
    out = blocks.run_preview("Run " + "x" * 300, book, {"host": "h" * 500, "tags": ["t" * 99] * 50}, plan, [], "t")
    assert len(out[0]["text"]["text"]) <= 150 and len(out) <= 50
    texts = [b["text"]["text"] for b in out if b["type"] == "section"]
    texts += [e["text"] for b in out if b["type"] == "context" for e in b["elements"]]
    assert texts and all(len(text) <= 3000 for text in texts)
    dialog = out[-1]["elements"][0]["confirm"]
    assert len(dialog["title"]["text"]) <= 24 and len(dialog["text"]["text"]) <= 300


# ---------------------------------------------------------------- config


def test_run_rules_are_per_runbook_in_the_slack_section() -> None:
    text = "slack:\n  acl:\n    run:\n      runbooks:\n        notes-test: {users: [U1], channels: [C1]}\n"
    config = parse_slack(load_text(text, "evac.yaml")["slack"], "evac.yaml")
    assert config.runbook_acl == {"notes-test": Rule(users=frozenset({"U1"}), channels=frozenset({"C1"}))}
    assert config.runbook_acl["notes-test"].at == "evac.yaml:5" and "run" not in config.acl


@pytest.mark.parametrize(
    ("acl", "expected"),
    [
        (
            "run: {users: [U1]}",
            "evac.yaml:3: slack.acl.run.users: each runbook has its own rule: runbooks: {NAME: {users: [...],",
        ),
        (
            "run: {runbooks: {notes: {users: [alice]}}}",
            "evac.yaml:3: slack.acl.run.runbooks.notes.users: expected a list of Slack IDs",
        ),
        ("run: {runbok: {}}", "evac.yaml:3: slack.acl.run.runbok: unknown field (did you mean 'runbooks'?)"),
        ("rebalanse: {users: [U1]}", "evac.yaml:3: slack.acl.rebalanse: unknown command (did you mean 'rebalance'?)"),
    ],
)
def test_a_bad_run_rule_is_one_line_naming_file_line_and_field(acl: str, expected: str) -> None:
    text = f"slack:\n  acl:\n    {acl}\n"
    with pytest.raises(ConfigError) as raised:
        parse_slack(load_text(text, "evac.yaml")["slack"], "evac.yaml")
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)


def test_a_run_rule_naming_a_runbook_nobody_registered_stops_the_bot_at_start(bot: Bot, mock: SlackMock) -> None:
    text = "slack:\n  acl:\n    run:\n      runbooks:\n        resize-tset: {users: [U1]}\n"
    config = parse_slack(load_text(text, "evac.yaml")["slack"], "evac.yaml")
    config = replace(config, bot_token="xoxb-test", signing_secret=SECRET, mode="http")
    with pytest.raises(ConfigError) as raised:
        Bot(bot.evac, config, client=WebClient(token="xoxb-test", base_url=mock.url))
    assert str(raised.value).startswith(
        "evac.yaml:5: slack.acl.run.runbooks.resize-tset: no registered runbook 'resize-tset' "
        "(did you mean 'resize-test'?); registered: "
    )


def test_a_run_previews_param_values_cannot_ping_or_link() -> None:
    book = parse_runbook(load_text(MORE["resize-test"], "resize-test.yaml"), "resize-test.yaml")
    out = blocks.run_preview("Run resize-test", book, {"reason": "<!channel> <@U9> <https://x|y>"}, None, [], "t")
    shown = json.dumps(out)
    assert "<!channel>" not in shown and "<@U9>" not in shown and "<https://" not in shown
    assert "&lt;!channel&gt;" in shown
