"""``/evac ha`` in Slack: anyone may look (status, capacity: the ``status`` rule); disarming and arming need
the ``ha`` rule and go through the front door (``Jobs.disarm``, ``Jobs.arm``), which
records them in the journal, audits them and tells the alerts channel."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evac import protection
from evac_bots.config import Rule
from evac_bots.slackapp import Bot
from tests.conftest import poll_until
from tests.slackmock import SlackMock, command_body, signed, slack_mock
from tests.unit.test_slack import OPS, OTHER, SECRET, Clock, FakeDrain, answering_port, running_bot


@pytest.fixture
def mock() -> Iterator[SlackMock]:
    with slack_mock() as m:
        yield m


@pytest.fixture
def bot(tmp_path: Path, mock: SlackMock) -> Iterator[Bot]:
    """The bot of test_slack.py; OPS holds the ``ha`` rule."""
    with answering_port() as port, running_bot(tmp_path, mock, FakeDrain(), Clock(), port) as the_bot:
        acl = {**the_bot.config.acl, "ha": Rule(users=frozenset({OPS}))}
        the_bot.config = replace(the_bot.config, acl=acl)
        yield the_bot


def ha(bot: Bot, mock: SlackMock, text: str, user: str = OPS) -> dict[str, Any]:
    """``/evac TEXT``, then the answer it gets (each command here answers once, after it acted)."""
    before = len(mock.find("response"))
    bot.bolt.dispatch(signed(SECRET, command_body("/evac", text, user, mock.response_url)))
    poll_until(lambda: len(mock.find("response")) > before, 10, f"the answer to /evac {text[:30]}")
    return mock.find("response")[before].args


def test_anyone_may_look_at_ha_status(bot: Bot, mock: SlackMock) -> None:
    said = ha(bot, mock, "ha", user=OTHER)
    assert said["text"].startswith("HA: *armed*") and said["response_type"] == "ephemeral"
    bot.evac.journal.disarm("storage migration", "slack:UOPS")
    text = ha(bot, mock, "ha status", user=OTHER)["text"]
    assert "HA: *disarmed* since <!date^" in text and "by <@UOPS>: storage migration" in text
    assert "never fenced or failed over" in text and "`/evac ha arm` resumes" in text


def test_disarm_needs_the_ha_rule_and_a_refusal_changes_nothing(bot: Bot, mock: SlackMock) -> None:
    said = ha(bot, mock, "ha disarm because", user=OTHER)
    assert said["text"] == (
        "Sorry, you are not on the access list for `ha`. Ask an evac admin to add your Slack ID to `slack.acl.ha`."
    )
    assert bot.evac.journal.disarmed() is None
    assert [a.action for a in bot.evac.journal.audit_log()] == ["ha.refused"]


def test_disarm_from_slack_disarms_through_the_front_door_and_tells_the_channel(bot: Bot, mock: SlackMock) -> None:
    said = ha(bot, mock, "ha disarm kernel upgrade week <!channel>")
    assert said["response_type"] == "in_channel"
    assert said["text"].startswith("<@UOPS> disarmed HA: kernel upgrade week &lt;!channel&gt;. Hosts that go down")
    held = bot.evac.journal.disarmed()
    assert held is not None and (held.actor, held.reason) == (f"slack:{OPS}", "kernel upgrade week <!channel>")
    assert [a.action for a in bot.evac.journal.audit_log()] == ["ha.disarm"]
    alert = mock.wait("chat.postMessage", "ha.disarmed")
    assert alert.args["channel"] == "CALERTS"


def test_disarming_twice_keeps_the_first_reason_and_says_so(bot: Bot, mock: SlackMock) -> None:
    ha(bot, mock, "ha disarm first")
    said = ha(bot, mock, "ha disarm second")
    assert said["response_type"] == "ephemeral" and "HA was disarmed already since" in said["text"]
    assert said["text"].endswith("by <@UOPS>: first: nothing changed.")
    held = bot.evac.journal.disarmed()
    assert held is not None and held.reason == "first"


def test_arm_from_slack_arms_and_says_for_how_long_and_by_whom_it_was_disarmed(bot: Bot, mock: SlackMock) -> None:
    bot.evac.journal.disarm("rack move", "cli:root")
    said = ha(bot, mock, "ha arm")
    assert said["response_type"] == "in_channel"
    assert said["text"].startswith("<@UOPS> armed HA (disarmed since <!date^")
    assert "by `cli:root`: rack move): hosts down now are failed over" in said["text"]
    assert bot.evac.journal.disarmed() is None
    assert [a.action for a in bot.evac.journal.audit_log()] == ["ha.arm"]
    assert ha(bot, mock, "ha arm")["text"] == "HA was armed already: nothing changed."


def test_arm_needs_the_ha_rule(bot: Bot, mock: SlackMock) -> None:
    bot.evac.journal.disarm("rack move", "cli:root")
    assert "not on the access list for `ha`" in ha(bot, mock, "ha arm", user=OTHER)["text"]
    assert bot.evac.journal.disarmed() is not None


def test_a_reason_too_long_is_refused_in_one_line_and_nothing_is_disarmed(bot: Bot, mock: SlackMock) -> None:
    text = ha(bot, mock, "ha disarm " + "x" * 400)["text"]
    assert (
        text.startswith("HA not disarmed: ha disarm: reason: 400 characters, at most 300 expected") and "\n" not in text
    )
    assert bot.evac.journal.disarmed() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ha disram", "Unknown `ha` command `disram` (did you mean 'disarm'?). Usage: `/evac ha [status]`"),
        ("ha arm now", "Usage: `/evac ha [status]`, `/evac ha capacity`, `/evac ha disarm [reason]`, `/evac ha arm`"),
        ("ha status please", "Usage: `/evac ha [status]`"),
        ("ha capacity now", "Usage: `/evac ha [status]`, `/evac ha capacity`"),
    ],
)
def test_a_malformed_ha_command_gets_usage_in_one_line(bot: Bot, mock: SlackMock, text: str, expected: str) -> None:
    said = ha(bot, mock, text)["text"]
    assert said.startswith(expected) and "\n" not in said
    assert bot.evac.journal.disarmed() is None


def test_anyone_may_ask_how_many_host_failures_the_fleet_absorbs(
    bot: Bot, mock: SlackMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = SimpleNamespace(
        summary=lambda: "1 host failure: any one host's protected guests fit on the others; not 2: no room",
        protected=3,
        protected_mib=3072,
        unprotected=1,
        free_pct=40.0,
        free_mib=4096,
        total_mib=10240,
        stays_down=("db1",),
        not_counted=(("host4", "down"),),
        loads=(("host1", 2048, 1024), ("host2", 1024, 3072)),
        worst=("host1",),
    )
    found = SimpleNamespace(report=report, holds=False, why="reserve 2 hosts broken: no room")
    monkeypatch.setattr(protection, "verdict", lambda app: found)
    text = ha(bot, mock, "ha capacity", user=OTHER)["text"]
    lines = text.splitlines()
    assert lines[0] == (
        ":warning: HA capacity: 1 host failure: any one host's protected guests fit on the others; not 2: no room"
    )
    assert lines[1] == "reserve 2 hosts broken: no room (ha.admission: warn)"
    assert "protected: 3 guests (3072 MiB)" in text and "40.0% of the memory of hosts up free" in text
    assert "local disks, not restarted elsewhere: db1" in text and "not counted: host4 (down)" in text
    assert "host1                     2048      1024  yes" in text


def test_help_shows_disarm_and_arm_only_to_who_holds_the_ha_rule(bot: Bot, mock: SlackMock) -> None:
    ops, other = ha(bot, mock, "help")["text"], ha(bot, mock, "help", user=OTHER)["text"]
    assert "`/evac ha disarm [reason]`" in ops and "`/evac ha disarm" not in other
    assert "`/evac ha [status]`" in ops and "`/evac ha [status]`" in other
