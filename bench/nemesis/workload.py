"""The workload: drains, returns and rebalances, one at a time, through the CLI (``evac``
subprocesses on a replica's config), the REST API (``POST /api/v1/jobs`` on a replica)
and Slack (a signed slash command to a replica's ``/slack/events``, its preview
confirmed with the button, the bot's messages going to the mock Web API), each chosen
by a seeded RNG.

A drained host is returned before anything else is done, so the lab never runs short
of room because of the workload; whatever the faults do to a job is the point.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.labkit import Replicas
from evac.lab import Lab
from tests.slackmock import SlackMock, action_body, button_value, command_body, signed_headers

CLI_TIMEOUT = 180.0  # s: a job under faults; the run's job bound checks the rest
SLACK_TIMEOUT = 30.0  # s for the bot's preview or its job message
SLACK_USER = "UNEMESIS"
CHANNELS = ("cli", "api", "slack")
RUNBOOKS = {"drain": "maintenance", "return": "maintenance-return", "rebalance": "rebalance"}


@dataclass(frozen=True)
class Action:
    t: float
    channel: str  # "cli", "api" or "slack"
    verb: str  # "drain", "return" or "rebalance"
    host: str  # "" for a rebalance
    outcome: str  # "rc 0", "http 202", "job 12", "timeout", ...


def pick(rng: random.Random, hosts: list[str], drained: str | None) -> tuple[str, str, str]:
    """``(channel, verb, host)``: return the drained host, else drain one (two in three)
    or rebalance."""
    channel = rng.choice(CHANNELS)
    if drained is not None:
        return channel, "return", drained
    if rng.random() < 1 / 3:
        return channel, "rebalance", ""
    return channel, "drain", rng.choice(hosts)


@dataclass(frozen=True)
class SlackSide:
    """What the workload needs to talk to the replicas' bots as Slack would."""

    mock: SlackMock
    secret: str


class Workload:
    def __init__(
        self, lab: Lab, replicas: Replicas, token: str, seed: int, t0: float, hosts: list[str], slack: SlackSide
    ) -> None:
        self.lab, self.replicas, self.token, self.t0, self.slack = lab, replicas, token, t0, slack
        self.rng = random.Random(seed)
        self.hosts = hosts
        self.drained: str | None = None
        self.actions: list[Action] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nemesis-workload", daemon=True)

    def config(self) -> Path:
        return self.replicas.configs[self.replicas.hosts[0]]

    def replica(self) -> str:
        return self.rng.choice(self.replicas.running() or self.replicas.hosts)

    def cli(self, verb: str, host: str) -> str:
        args = {
            "drain": ["evacuate", host, "--yes"],
            "return": ["host", "enable", host, "--return", "--yes"],
            "rebalance": ["rebalance", "--yes"],
        }[verb]
        argv = [sys.executable, "-m", "evac", "--config", str(self.config()), *args, "--json"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "timeout"
        if done.returncode == 0:
            return "rc 0"
        said = ((done.stderr.strip() or done.stdout.strip()).splitlines() or [""])[-1][:100]
        return f"rc {done.returncode}: {said}"

    def api(self, verb: str, host: str) -> str:
        url = f"{self.lab.serve_url(self.replica())}/api/v1/jobs"
        params = {"host": host} if host else {}
        try:
            response = httpx.post(
                url,
                json={"runbook": RUNBOOKS[verb], "params": params},
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        if response.status_code != 202:
            try:
                said = str(response.json().get("error", ""))[:100]
            except ValueError:
                said = response.text[:100]
            return f"http {response.status_code}: {said}"
        self.wait_job(json.loads(response.text).get("job"))
        return "http 202"

    def slack_command(self, verb: str, host: str) -> str:
        """The slash command to one replica's bot, its preview's Confirm to the same bot
        (previews live in the bot that made them), then the job it started, followed."""
        replica = self.replica()
        command, text = {
            "drain": ("/evacuate", f"{host} nemesis"),
            "return": ("/evac", f"return {host}"),
            "rebalance": ("/evac", "rebalance"),
        }[verb]
        seen = len(self.slack.mock.calls)
        failed = self.to_bot(replica, command_body(command, text, SLACK_USER, self.slack.mock.response_url))
        if failed:
            return failed
        preview = self.next_message(seen, "evac_confirm" if verb == "drain" else "evac_run_confirm")
        if preview is None:
            return f"no preview: {self.said_instead(seen)[:80]}".rstrip(": ")
        action, value = preview
        seen = len(self.slack.mock.calls)
        failed = self.to_bot(replica, action_body(action, value, SLACK_USER, self.slack.mock.response_url))
        if failed:
            return f"confirm {failed}"
        job = self.job_message(seen)
        if job is None:
            return f"confirmed, no job message: {self.said_instead(seen)[:80]}".rstrip(": ")
        self.wait_job(job)
        return f"job {job}"

    def to_bot(self, replica: str, body: str) -> str:
        """POST ``body`` signed as Slack signs it; what went wrong, or "" when answered 200."""
        headers = signed_headers(self.slack.secret, body)
        try:
            response = httpx.post(
                f"{self.lab.serve_url(replica)}/slack/events", content=body, headers=headers, timeout=10
            )
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        return "" if response.status_code == 200 else f"http {response.status_code}"

    def next_message(self, seen: int, action: str) -> tuple[str, str] | None:
        """The Confirm button of the first preview the bot posted after call ``seen``."""
        deadline = time.monotonic() + SLACK_TIMEOUT
        while time.monotonic() < deadline and not self._stop.is_set():
            for call in self.slack.mock.calls[seen:]:
                if call.method == "chat.postMessage" and action in json.dumps(call.args.get("blocks", "")):
                    return action, button_value(call, action)
            said = self.said_instead(seen)
            if said:
                return None
            self._stop.wait(0.2)
        return None

    def said_instead(self, seen: int) -> str:
        """An ephemeral answer (a refusal) posted to the response URL since call ``seen``."""
        for call in self.slack.mock.calls[seen:]:
            if call.method == "response":
                return str(call.args.get("text", ""))
        return ""

    def job_message(self, seen: int) -> int | None:
        deadline = time.monotonic() + SLACK_TIMEOUT
        while time.monotonic() < deadline and not self._stop.is_set():
            for call in self.slack.mock.calls[seen:]:
                found = re.search(r": job (\d+) starting$", str(call.args.get("text", "")))
                if call.method == "chat.postMessage" and found:
                    return int(found.group(1))
            if self.said_instead(seen):
                return None
            self._stop.wait(0.2)
        return None

    def wait_job(self, job: object) -> None:
        """Until the job finishes (or CLI_TIMEOUT), asked of any replica's REST API, so a
        return follows its drain."""
        deadline = time.monotonic() + CLI_TIMEOUT
        while time.monotonic() < deadline and not self._stop.is_set():
            url = f"{self.lab.serve_url(self.replica())}/api/v1/jobs/{job}"
            try:
                response = httpx.get(url, headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
                if response.status_code == 200 and response.json().get("state") != "running":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            self._stop.wait(1)

    def step(self) -> None:
        channel, verb, host = pick(self.rng, self.hosts, self.drained)
        t = time.monotonic() - self.t0
        if channel == "cli":
            outcome = self.cli(verb, host)
        elif channel == "api":
            outcome = self.api(verb, host)
        else:
            outcome = self.slack_command(verb, host)
        self.actions.append(Action(round(t, 2), channel, verb, host, outcome))
        print(f"  [{t:6.1f}s] workload: {channel} {verb} {host}: {outcome}", flush=True)
        if verb == "drain":
            self.drained = host
        elif verb == "return":
            self.drained = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.rng.uniform(1.0, 3.0))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No new action; the one under way finishes (its own bound)."""
        self._stop.set()
        self._thread.join(CLI_TIMEOUT + 15)

    def finish(self) -> None:
        """Return the host the workload left drained, if any (through the CLI)."""
        if self.drained is not None:
            outcome = self.cli("return", self.drained)
            self.actions.append(Action(round(time.monotonic() - self.t0, 2), "cli", "return", self.drained, outcome))
            print(f"  workload: final return of {self.drained}: {outcome}", flush=True)
            self.drained = None
