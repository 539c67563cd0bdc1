"""A real `evac serve`, driven over real HTTP: webhooks, metrics, shutdown and resume."""

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
from prometheus_client.parser import text_string_to_metric_families

from evac.inventory import Inventory
from evac.lab import Lab
from evac.sqlitejournal import SqliteJournal
from evac.states import HostMode
from tests.conftest import http_get, poll_until
from tests.integration.conftest import placements, qemu_processes, record_doctor

TOKEN = "t0ken-for-tests"
ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, lab: Lab, tmp: Path, drain: str = "", listen: str = "") -> None:
        self.port = free_port()
        self.journal_path = tmp / "journal.db"
        self.config = tmp / "evac.yaml"
        self.config.write_text(f"""
inventory: {lab.inventory_file}
journal: {self.journal_path}
listen: {{address: 127.0.0.1, port: {self.port}{listen}}}
webhooks: {{token: "env:EVAC_TEST_TOKEN", max_body_kib: 16, host_label: instance}}
monitor: {{enabled: false}}
shutdown: {{in_flight: finish, grace: 120}}
logging: {{format: json}}
{drain}
""")
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "EVAC_TEST_TOKEN": TOKEN}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "evac", "serve", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
        poll_until(self.healthy, 30, "evac serve to answer /healthz")

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.tail()
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 180) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"evac serve ignored {signal.Signals(sig).name} for {timeout} s; its log ends:\n" + self.tail())

    def tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-30:])

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        return http_get(self.port, path, token)

    def post(self, path: str, body: bytes | dict[str, Any], token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def journal(self) -> SqliteJournal:
        return SqliteJournal(self.journal_path)


@pytest.fixture
def serve(lab: Lab, lab_doctor: list[Any], tmp_path: Path) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(drain: str = "", listen: str = "") -> Served:
        served = Served(lab, tmp_path, drain, listen)
        journal = SqliteJournal(served.journal_path)
        record_doctor(journal, lab_doctor)  # the lab passed evac doctor: automatic failover may fence
        journal.close()
        served.start()
        made.append(served)
        return served

    yield make
    for served in made:
        if served.proc and served.proc.poll() is None:
            served.stop(signal.SIGKILL)
    for host in lab.host_names():
        if lab.power_state(host) == "off":
            lab.start_host(host)


def alert(instance: str, status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "evac",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "HostDown", "instance": instance},
                "annotations": {},
                "startsAt": "2026-11-27T07:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "abc",
            }
        ],
    }


def metric(text: bytes, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_with_the_monitor_off_an_alert_alone_fails_a_dead_host_over_exactly_once(
    serve: Callable[..., Served], lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    served = serve()  # monitor off, fresh journal: the service still records what runs where
    name = make_guest("host2")
    poll_until(lambda: name in served.journal().definitions("host2"), 60, f"the service to snapshot {name}")
    lab.kill_host("host2")
    status, body = served.post("/hooks/alertmanager", alert(f"{inventory.host('host2').address}:9100"))
    (result,) = body["results"]
    assert status == 200 and (result["result"], result["host"]) == ("accepted", "host2")
    journal = served.journal()
    poll_until(lambda: (j := journal.job(result["job"])) is not None and j.finished, 90, "the failover job")
    job = journal.job(result["job"])
    assert job is not None and job.state == "succeeded", job
    report = journal.step(job.id, "report")
    assert report is not None and "guest(s) known from a snapshot" in report.outputs["summary"]
    where = placements(inventory, name)
    assert len(where) == 1 and "host2" not in where and qemu_processes(name) == 1


def test_alert_naming_an_unknown_host_is_recorded_and_does_nothing(serve: Callable[..., Served]) -> None:
    served = serve()
    status, body = served.post("/hooks/alertmanager", alert("nosuchhost:9100"))
    (result,) = body["results"]
    assert status == 200 and (result["result"], result["why"]) == ("ignored", "unknown host")
    assert served.journal().jobs() == []
    assert served.journal().audit_log()[0].action == "alert.unknown_host"


def test_resolved_alert_is_recorded_only(serve: Callable[..., Served], inventory: Inventory) -> None:
    served = serve()
    status, body = served.post("/hooks/alertmanager", alert("host1", status="resolved"))
    (result,) = body["results"]
    assert (status, result["result"], result["host"]) == (200, "resolved", "host1")
    assert served.journal().jobs() == []


def test_wrong_token_gets_401(serve: Callable[..., Served]) -> None:
    served = serve()
    assert served.post("/hooks/alertmanager", alert("host1"), token="wrong")[0] == 401
    assert served.post("/hooks/evacuate", {"host": "host1"}, token=None)[0] == 401


def test_malformed_payloads_get_400_with_the_reason_and_oversized_bodies_413(serve: Callable[..., Served]) -> None:
    served = serve()
    status, body = served.post("/hooks/alertmanager", b'{"version": "4", "alerts": [}')
    assert status == 400 and body["error"].startswith("body: invalid JSON")
    status, body = served.post("/hooks/alertmanager", {"version": "4", "alerts": [{"labels": {}}]})
    assert (status, body["error"]) == (400, "alerts[0].status: required")
    status, body = served.post("/hooks/evacuate", {"host": "host1", "mode": "teleport"})
    assert (status, body["error"]) == (400, "mode: expected drain or failover, got 'teleport'")
    assert served.post("/hooks/alertmanager", b"x" * (17 * 1024))[0] == 413
    assert served.healthy()  # and it is still up


def test_a_metrics_token_guards_metrics_and_the_details_of_health(serve: Callable[..., Served]) -> None:
    served = serve(listen=', metrics_token: "env:EVAC_TEST_TOKEN"')
    assert served.get("/metrics")[0] == 401
    assert served.get("/metrics", token="wrong")[0] == 401
    assert served.get("/metrics", token=TOKEN)[0] == 200
    assert json.loads(served.get("/healthz")[1]) == {"ok": True}  # liveness stays open
    assert "hosts" in json.loads(served.get("/healthz", token=TOKEN)[1])


def test_metrics_parse_and_count_what_happened(
    serve: Callable[..., Served], inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    served = serve()
    name = make_guest("host3", wait=False)
    status, body = served.post("/hooks/evacuate", {"host": "host3", "reason": "test", "mode": "drain"})
    assert status == 202
    journal = served.journal()
    poll_until(lambda: (j := journal.job(body["job"])) is not None and j.finished, 120, "the drain")
    text = served.get("/metrics")[1]
    assert metric(text, "evac_jobs_total", runbook="maintenance", state="succeeded") == 1
    assert metric(text, "evac_migrations_total", result="succeeded") >= 1
    assert metric(text, "evac_migration_seconds_count") >= 1
    assert metric(text, "evac_webhooks_total", hook="evacuate", outcome="202") == 1
    assert "host3" not in placements(inventory, name)
    journal.set_host_state("host3", HostMode.ENABLED, "", "test")


def test_sigterm_mid_job_leaves_a_consistent_journal_and_a_restart_finishes_it(
    serve: Callable[..., Served], inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    served = serve(drain="drain: {concurrency: 1, bandwidth_mib: 4}")
    names = [make_guest("host3", wait=False) for _ in range(2)]
    status, body = served.post("/hooks/evacuate", {"host": "host3", "mode": "drain"})
    assert status == 202
    journal = served.journal()
    poll_until(
        lambda: any(e.kind == "item.started" for _, e in journal.events(body["job"])), 60, "a migration to start"
    )
    assert served.stop() == 0
    job = journal.job(body["job"])
    assert job is not None and job.state == "running"  # left for the next start, not rolled back
    assert "host3" in journal.host_states()  # still in maintenance: nothing half-undone
    moved = {k for k, item in journal.items(body["job"], "migrate").items() if item.state == "succeeded"}
    assert len(moved) == 1  # the in-flight migration finished; the next one never started

    served.start()
    poll_until(lambda: (j := journal.job(body["job"])) is not None and j.finished, 180, "the resumed drain")
    assert journal.job(body["job"]).state == "succeeded"  # type: ignore[union-attr]
    for name in names:
        where = placements(inventory, name)
        assert len(where) == 1 and "host3" not in where and qemu_processes(name) == 1
    served.stop()
    journal.set_host_state("host3", HostMode.ENABLED, "", "test")
