"""``evac serve`` replicas inside lab hosts, on the lab's etcd, as the HA and agent tests
drive them: start them, find the leader, boot guests, and see where guests run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from evac.app import App, make_app
from evac.doctor import diagnose
from evac.inventory import Inventory, load_inventory
from evac.journal import Journal
from evac.lab import Lab
from evac.lab.guests import GuestSpec, create_guest, wait_console
from evac.states import HostMode
from tests.conftest import poll_until
from tests.integration.conftest import placements

TOKEN = "ha-test-token"
SETTLE = 90.0  # seconds: a generous bound on anything that must happen


class Replicas:
    """The three ``evac serve`` replicas and what the tests ask of them."""

    def __init__(self, lab: Lab, token_file: Path, **overrides: Any) -> None:
        self.lab = lab
        self.hosts = lab.etcd_member_names()  # a replica beside each member
        self.spare = next(h for h in lab.host_names() if h not in self.hosts)  # no member, no replica
        self.configs = {
            h: lab.serve_config(
                h,
                webhooks={"token": f"file:{token_file}"},
                snapshots={"every": 1},
                monitor={"window": 5},  # each test's host failure is its own, not a storm with the last one's
                **overrides,
            )
            for h in self.hosts
        }
        self.app: App = make_app(self.configs[self.hosts[0]])
        self.inventory: Inventory = load_inventory(lab.inventory_file)
        doctor = diagnose(self.app)  # for real, into etcd: automatic failover needs a passed doctor
        assert all(run.safe_to_fence()[0] for run in doctor), [run.safe_to_fence() for run in doctor]
        self.guests: list[str] = []

    @property
    def journal(self) -> Journal:
        return self.app.journal

    def start(self, host: str) -> None:
        if not self.lab.serve_pids(host):
            self.lab.serve(host, self.configs[host])
        self.wait(lambda: self.health(host) is not None, f"evac serve on {host} answers", host)

    def health(self, host: str) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.lab.serve_url(host)}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def leads(self, host: str) -> bool:
        health = self.health(host)
        return bool(health and health.get("cluster", {}).get("leader"))

    def leader(self, among: list[str] | None = None) -> str:
        """The one replica that leads (waiting for an election if there is none yet)."""
        candidates = among or self.hosts
        self.wait(lambda: sum(self.leads(h) for h in candidates) == 1, f"one leader among {candidates}", "")
        return next(h for h in candidates if self.leads(h))

    def guest(self, host: str, name: str) -> str:
        offset = create_guest(self.lab, host, GuestSpec(name=name))
        self.guests.append(name)
        wait_console(self.lab, name, after=offset, timeout=300)
        self.wait(lambda: name in self.journal.definitions(host), f"{name} in the snapshot of {host}", host)
        return name

    def running(self, name: str) -> list[str]:
        return [h for h, (state, _) in placements(self.inventory, name).items() if state == "running"]

    def runs_once_elsewhere(self, name: str, not_on: str) -> str:
        self.wait(lambda: len(self.running(name)) == 1, f"{name} running again", not_on)
        (host,) = self.running(name)
        assert host != not_on
        return host

    def wait(self, predicate: Callable[[], object], what: str, host: str) -> None:
        """``poll_until`` for ``SETTLE``; a timeout says what the replicas did about ``host``."""
        try:
            poll_until(predicate, SETTLE, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis(host)}") from None

    def diagnosis(self, host: str, lines: int = 60) -> str:
        """What a failed wait shows: the failovers of ``host`` with their events, and the
        tail of every replica's log (a CI failure is read from its log alone)."""
        parts = []
        for job in [j for j in self.journal.jobs(20) if j.target == host]:
            parts.append(f"job {job.id} {job.runbook} {job.state}: {job.error}")
            parts += [f"  {event.kind} {event.item} {event.message}" for _, event in self.journal.events(job.id)][-15:]
        for replica in self.hosts:
            log = self.lab.host_dir(replica) / "log" / "serve.log"
            tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            parts += [f"--- {replica} serve.log", *tail]
        return "\n".join(parts)

    def revive(self, host: str) -> None:
        """Power back on, replica included, and back in service."""
        if self.lab.power_state(host) == "off":
            self.lab.start_host(host)
        if host in self.hosts:
            self.start(host)
        self.journal.set_host_state(host, HostMode.ENABLED, "test", "test")

    def remove_guests(self) -> None:
        from evac.errors import EvacError
        from evac.hypervisor import Hypervisor

        for spec in self.inventory.hosts:
            try:
                with Hypervisor.connect(spec.name, spec.uri) as hv:
                    for name in self.guests:
                        if hv.has_guest(name):
                            hv.destroy(name)
                            hv.undefine(name)
            except EvacError:
                continue
        self.guests.clear()

    def failovers(self, host: str, since: float) -> list[int]:
        return [
            j.id
            for j in self.journal.jobs(200)
            if j.runbook == "host-failure" and j.target == host and j.created >= since
        ]

    def power_offs(self, host: str, since: float) -> list[dict[str, Any]]:
        return [entry for entry in self.lab.power_log() if entry["host"] == host and entry["ts"] >= since]
