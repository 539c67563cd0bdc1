"""The workload: drains and returns, one at a time, through the CLI (``evac evacuate``,
``evac host enable --return`` as subprocesses with a replica's config) and the REST API
(``POST /api/v1/jobs`` on a replica), chosen by a seeded RNG.

A drained host is returned before another is drained, so the lab never runs short of
room because of the workload; whatever the faults do to a job is the point.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.labkit import Replicas
from evac.lab import Lab

CLI_TIMEOUT = 180.0  # s: a CLI job under faults; the run's job bound checks the rest


@dataclass(frozen=True)
class Action:
    t: float
    channel: str  # "cli" or "api"
    verb: str  # "drain" or "return"
    host: str
    outcome: str  # "rc 0", "http 202", "timeout", ...


def pick(rng: random.Random, hosts: list[str], drained: str | None) -> tuple[str, str, str]:
    """``(channel, verb, host)``: return the drained host, else drain one."""
    channel = rng.choice(("cli", "api"))
    if drained is not None:
        return channel, "return", drained
    return channel, "drain", rng.choice(hosts)


class Workload:
    def __init__(self, lab: Lab, replicas: Replicas, token: str, seed: int, t0: float, hosts: list[str]) -> None:
        self.lab, self.replicas, self.token, self.t0 = lab, replicas, token, t0
        self.rng = random.Random(seed)
        self.hosts = hosts
        self.drained: str | None = None
        self.actions: list[Action] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nemesis-workload", daemon=True)

    def config(self) -> Path:
        return self.replicas.configs[self.replicas.hosts[0]]

    def cli(self, verb: str, host: str) -> str:
        args = ["evacuate", host, "--yes"] if verb == "drain" else ["host", "enable", host, "--return", "--yes"]
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
        runbook = "maintenance" if verb == "drain" else "maintenance-return"
        up = self.replicas.running() or self.replicas.hosts
        url = f"{self.lab.serve_url(self.rng.choice(up))}/api/v1/jobs"
        try:
            response = httpx.post(
                url,
                json={"runbook": runbook, "params": {"host": host}},
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
        self.wait_job(url, json.loads(response.text).get("job"))
        return "http 202"

    def wait_job(self, url: str, job: object) -> None:
        """Until the API's job finishes (or CLI_TIMEOUT), so a return follows its drain."""
        deadline = time.monotonic() + CLI_TIMEOUT
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                response = httpx.get(f"{url}/{job}", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
                if response.status_code == 200 and response.json().get("state") != "running":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            self._stop.wait(1)

    def step(self) -> None:
        channel, verb, host = pick(self.rng, self.hosts, self.drained)
        t = time.monotonic() - self.t0
        outcome = self.cli(verb, host) if channel == "cli" else self.api(verb, host)
        self.actions.append(Action(round(t, 2), channel, verb, host, outcome))
        print(f"  [{t:6.1f}s] workload: {channel} {verb} {host}: {outcome}", flush=True)
        self.drained = host if verb == "drain" else None

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
