"""One evac.yaml for `evac serve` and `evac slack`: a drain confirmed in Slack is in the
journal every command given that file reads.

Both run as real processes; Slack's Web API is the local mock (tests/slackmock.py) and
Slack's requests to the bot are signed as Slack signs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evac.inventory import Inventory
from evac.lab import Lab
from evac.sqlitejournal import SqliteJournal
from evac.states import HostMode, JobState
from tests.conftest import poll_until
from tests.integration.conftest import placements
from tests.slackmock import SlackMock, action_body, button_value, command_body, signed, slack_mock

ROOT = Path(__file__).parents[2]
SECRET = "slack-signing-secret-for-tests"
OPS = "UOPS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Fleet:
    """`evac serve` and `evac slack --mode http`, both on one evac.yaml."""

    def __init__(self, lab: Lab, tmp: Path, mock: SlackMock) -> None:
        self.tmp = tmp
        self.serve_port, self.slack_port = free_port(), free_port()
        self.journal_path = tmp / "journal.db"
        self.config = tmp / "evac.yaml"
        self.config.write_text(f"""
inventory: {lab.inventory_file}
journal: {self.journal_path}
listen: {{address: 127.0.0.1, port: {self.serve_port}}}
monitor: {{enabled: false}}
slack:
  bot_token: env:SLACK_BOT_TOKEN
  signing_secret: env:SLACK_SIGNING_SECRET
  mode: http
  port: {self.slack_port}
  api_url: {mock.url}
  acl:
    evacuate: {{users: [{OPS}]}}
""")
        self.env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET}
        for var in ("EVAC_CONFIG", "EVAC_INVENTORY", "EVAC_JOURNAL"):
            self.env.pop(var, None)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *argv: str, port: int) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child writes it while it runs
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "evac", *argv], cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        log.close()

        def up() -> bool:
            assert self.procs[name].poll() is None, f"{name} exited:\n{self.tail(name)}"
            return answers(port)

        poll_until(up, 30, f"{name} to listen on {port}")

    def tail(self, name: str) -> str:
        return "\n".join((self.tmp / f"{name}.log").read_text().splitlines()[-30:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def to_slack_bot(self, body: str) -> int:
        """POST a request to `evac slack` signed as Slack signs it."""
        headers = {k: v[0] for k, v in signed(SECRET, body).headers.items()}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.slack_port}/slack/events", data=body.encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def history(self) -> list[dict[str, Any]]:
        """`evac --config FILE history --json`: what every command given the file sees."""
        out = subprocess.run(
            [sys.executable, "-m", "evac", "--config", str(self.config), "history", "--json"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return list(json.loads(out.stdout))


@pytest.fixture
def fleet(lab: Lab, tmp_path: Path) -> Iterator[tuple[Fleet, SlackMock]]:
    with slack_mock() as mock:
        the_fleet = Fleet(lab, tmp_path, mock)
        try:
            yield the_fleet, mock
        finally:
            the_fleet.stop()
            SqliteJournal(the_fleet.journal_path).set_host_state("host3", HostMode.ENABLED, "", "test")


def test_a_drain_confirmed_in_slack_is_in_the_history_of_the_file_evac_serve_runs_on(
    fleet: tuple[Fleet, SlackMock], make_guest: Callable[..., str], inventory: Inventory
) -> None:
    the_fleet, mock = fleet
    name = make_guest("host3", wait=False)
    the_fleet.start("serve", "serve", "--config", str(the_fleet.config), port=the_fleet.serve_port)
    the_fleet.start("slack", "--config", str(the_fleet.config), "slack", "--mode", "http", port=the_fleet.slack_port)

    assert the_fleet.to_slack_bot(command_body("/evacuate", "host3 kernel update", OPS, mock.response_url)) == 200
    token = button_value(mock.wait("chat.postMessage", "Confirm drain", timeout=60), "evac_confirm")
    assert the_fleet.to_slack_bot(action_body("evac_confirm", token, OPS, mock.response_url)) == 200
    mock.wait("chat.postMessage", "Drain host3: job", timeout=30)

    def drained() -> list[dict[str, Any]]:
        return [
            j
            for j in the_fleet.history()
            if not j["dry_run"] and j["target"] == "host3" and JobState(j["state"]).terminal
        ]

    poll_until(drained, 180, "the drain confirmed in Slack, in `evac history`", every=1)
    [job] = drained()
    assert (job["runbook"], job["state"]) == ("maintenance", JobState.SUCCEEDED)
    journal = SqliteJournal(the_fleet.journal_path)
    assert journal.host_states()["host3"].state == HostMode.MAINTENANCE
    run = next(a for a in journal.audit_log() if a.action == "run")
    assert run.actor == f"slack:{OPS}"
    assert "host3" not in placements(inventory, name)
    assert all(proc.poll() is None for proc in the_fleet.procs.values())  # both still up on one journal
