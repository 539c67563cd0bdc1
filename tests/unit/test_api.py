"""The REST API (/api/v1) on build_app: a real App on an inventory of hosts that do not
exist, a real SQLite journal; only ``jobs.spawn`` is stubbed, so nothing runs."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from evac.api import Api, router
from evac.apiauth import ApiSettings, ApiToken, make_session, parse_api
from evac.app import App
from evac.config import ServiceConfig, default_config, load_config
from evac.errors import ConfigError
from evac.events import Event
from evac.jobs import Started
from evac.metrics import Metrics
from evac.plugins import plugin_manager
from evac.states import EventKind, HostMode, ItemState, JobState, StepState
from evac.web import WebServer, build_app
from evac.yamldoc import load_text

SOURCE = "203.0.113.9"
SCOPES = ("read", "run:*", "cancel")
TOKENS = {scope: f"token-with-all-but-{scope.replace(':', '-').replace('*', 'any')}" for scope in SCOPES}
READER, RUNNER, CANCELLER = "reader-token-0123456789", "runner-token-0123456789", "cancel-token-0123456789"
DOMAIN = """<domain type='kvm'><name>{name}</name><uuid>00000000-0000-0000-0000-00000000000{n}</uuid>
<memory unit='KiB'>262144</memory><vcpu>2</vcpu>
<metadata><evac:guest xmlns:evac='https://evac.dev/xmlns/guest/1' priority='5' tags='db'/></metadata>
<devices/></domain>"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_settings(**changes: Any) -> ApiSettings:
    """One token per scope holding every other scope, and one token per scope alone."""
    tokens = [
        ApiToken(f"all-but-{scope}", value, frozenset(SCOPES) - {scope})
        for scope, value in TOKENS.items()
        if scope != "run:*"
    ]
    tokens += [
        ApiToken("all-but-run", TOKENS["run:*"], frozenset({"read", "cancel", "run:rebalance"})),
        ApiToken("reader", READER, frozenset({"read"})),
        ApiToken("runner", RUNNER, frozenset({"run:maintenance"})),
        ApiToken("canceller", CANCELLER, frozenset({"cancel"})),
    ]
    return ApiSettings(tokens=tuple(tokens), rate_per_second=1000.0, burst=1000, **changes)


@dataclass
class FakeServed:
    """What ``evac.web.Served`` gives build_app: the app, its config, metrics and health."""

    app: App
    config: ServiceConfig
    metrics: Metrics = field(default_factory=Metrics)
    accepting: bool = True
    monitor: Any = None
    spawned: list[Started] = field(default_factory=list)

    def health(self) -> dict[str, Any]:
        return {"ok": True}


def make_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: ApiSettings | None = None, api: bool = True
) -> FakeServed:
    inventory = tmp_path / "hosts.yaml"
    uri = f"qemu+tcp://127.0.0.1:{closed_port()}/system"  # nothing answers: no libvirt is touched
    inventory.write_text(
        f"hosts:\n  - {{name: kvm3, uri: '{uri}', address: 198.18.0.3}}\n"
        f"  - {{name: kvm4, uri: '{uri}', address: 198.18.0.4}}\n"
    )
    defaults = default_config(inventory, tmp_path / "journal.db")
    config = replace(defaults, sections={"api": settings or api_settings()} if api else {})
    served = FakeServed(App.from_config(config), config)
    monkeypatch.setattr(served.app.jobs, "spawn", served.spawned.append)
    return served


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServed:
    return make_served(tmp_path, monkeypatch)


def client(served: FakeServed, source: str = SOURCE) -> TestClient:
    return TestClient(build_app(served), client=(source, 50000))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def finished_job(served: FakeServed, state: JobState = JobState.SUCCEEDED, events: int = 3) -> int:
    journal = served.app.journal
    job = journal.create_job("maintenance", "/nowhere/maintenance.yaml", {"host": "kvm3"}, "kvm3", False, None)
    journal.add_event(Event(EventKind.JOB_STARTED, job, data={"runbook": "maintenance"}))
    for n in range(events - 2):
        journal.add_event(Event(EventKind.PROGRESS, job, "migrate", "g1", f"{n * 10}% sent", {"processed": n}))
    journal.finish_job(job, state, "" if state == JobState.SUCCEEDED else "one guest did not move")
    journal.add_event(Event(EventKind.JOB_FINISHED, job, data={"state": state}))
    return job


def running_job(served: FakeServed) -> int:
    journal = served.app.journal
    job = journal.create_job("maintenance", "/nowhere/maintenance.yaml", {"host": "kvm4"}, "kvm4", False, None)
    journal.add_event(Event(EventKind.JOB_STARTED, job, data={"runbook": "maintenance"}))
    return job


# ---------------------------------------------------------------- scopes, route by route
Call = Callable[[TestClient, FakeServed, dict[str, str]], Any]


def _get(path: str) -> Call:
    return lambda http, served, headers: http.get(path.format(job=finished_job(served)), headers=headers)


ROUTES: dict[str, tuple[str, Call, int]] = {
    "GET /api/v1/hosts": ("read", _get("/api/v1/hosts"), 200),
    "GET /api/v1/jobs": ("read", _get("/api/v1/jobs"), 200),
    "GET /api/v1/jobs/{id}": ("read", _get("/api/v1/jobs/{job}"), 200),
    "GET /api/v1/jobs/{id}/events": ("read", _get("/api/v1/jobs/{job}/events"), 200),
    "POST /api/v1/jobs": (
        "run:*",
        lambda http, served, headers: http.post(
            "/api/v1/jobs", json={"runbook": "maintenance", "params": {"host": "kvm3"}}, headers=headers
        ),
        202,
    ),
    "POST /api/v1/jobs/{id}/cancel": (
        "cancel",
        lambda http, served, headers: http.post(f"/api/v1/jobs/{running_job(served)}/cancel", headers=headers),
        202,
    ),
    "POST /api/v1/session": ("read", lambda http, served, headers: http.post("/api/v1/session", headers=headers), 204),
}


@pytest.mark.parametrize("route", ROUTES)
def test_the_rest_apis_scopes_are_enforced(served: FakeServed, route: str) -> None:
    scope, call, success = ROUTES[route]
    http = client(served)
    assert call(http, served, {}).status_code == 401
    assert call(http, served, bearer("not-a-token-of-ours-at-all")).status_code == 401
    lacking = call(http, served, bearer(TOKENS[scope]))
    assert lacking.status_code == 403, lacking.text
    assert "lacks the scope" in lacking.json()["error"]
    granted = call(http, served, bearer(TOKENS["read" if scope != "read" else "cancel"]))
    assert granted.status_code == success, granted.text


def test_every_api_route_is_covered_by_the_scope_test(served: FakeServed) -> None:
    paths = build_app(served).openapi()["paths"]
    routes = {f"{m.upper()} {p.replace('{job_id}', '{id}')}" for p, ms in paths.items() for m in ms if "/api/" in p}
    assert routes - {"DELETE /api/v1/session"} == set(ROUTES)


def test_the_openapi_document_says_bearer_and_each_routes_scope(served: FakeServed) -> None:
    document = build_app(served).openapi()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if path.startswith("/api/v1/") and (method, path) != ("delete", "/api/v1/session"):
                assert "Scope: `" in operation["description"], (method, path)
                assert {"bearer": []} in operation["security"], (method, path)


def test_a_token_for_one_runbook_starts_that_runbook_and_no_other(served: FakeServed) -> None:
    http = client(served)
    other = http.post(
        "/api/v1/jobs", json={"runbook": "host-failure", "params": {"host": "kvm3"}}, headers=bearer(RUNNER)
    )
    assert (other.status_code, other.json()["error"]) == (403, "token 'runner' lacks the scope 'run:host-failure'")
    ours = http.post(
        "/api/v1/jobs", json={"runbook": "maintenance", "params": {"host": "kvm3"}}, headers=bearer(RUNNER)
    )
    assert ours.status_code == 202


# ---------------------------------------------------------------- starting and cancelling
def test_a_start_goes_through_the_front_door_and_answers_202_with_the_job(served: FakeServed) -> None:
    answer = client(served).post(
        "/api/v1/jobs",
        json={"runbook": "maintenance", "params": {"host": "kvm3", "bandwidth_mib": 50}},
        headers=bearer(RUNNER),
    )
    assert answer.status_code == 202
    job = answer.json()["job"]
    assert answer.headers["Location"] == f"/api/v1/jobs/{job}"
    assert (answer.json()["runbook"], answer.json()["target"]) == ("maintenance", "kvm3")
    assert [s.job for s in served.spawned] == [job]
    (audit,) = [a for a in served.app.journal.audit_log(10) if a.action == "run"]
    assert (audit.actor, audit.target, audit.detail["job"]) == ("api:runner", "kvm3", job)


def test_a_target_other_than_the_runbooks_host_is_a_400_naming_target(served: FakeServed) -> None:
    body = {"runbook": "maintenance", "params": {"host": "kvm3"}, "target": "kvm4"}
    answer = client(served).post("/api/v1/jobs", json=body, headers=bearer(RUNNER))
    assert answer.status_code == 400 and answer.json()["error"].startswith("target: expected 'kvm3'")
    assert served.spawned == [] and served.app.journal.jobs() == []


def test_a_target_that_is_the_runbooks_host_is_accepted(served: FakeServed) -> None:
    body = {"runbook": "maintenance", "params": {"host": "kvm3"}, "target": "kvm3"}
    answer = client(served).post("/api/v1/jobs", json=body, headers=bearer(RUNNER))
    assert answer.status_code == 202 and answer.json()["target"] == "kvm3"


def test_a_dry_run_answers_its_result_at_once_and_changes_nothing(served: FakeServed) -> None:
    body = {"runbook": "maintenance", "params": {"host": "kvm3"}, "dry_run": True}
    answer = client(served).post("/api/v1/jobs", json=body, headers=bearer(RUNNER))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["dry_run"], answer.json()["runbook"]) == (True, "maintenance")
    assert "unreachable" in answer.json()["error"]  # the plan needs the host, which does not exist here
    (job,) = served.app.journal.jobs()
    assert (job.id, job.dry_run, job.finished) == (answer.json()["job"], True, True)
    assert served.spawned == [] and served.app.journal.host_states() == {}


def test_a_second_start_while_the_first_holds_the_host_is_a_409(served: FakeServed) -> None:
    http = client(served)
    body = {"runbook": "maintenance", "params": {"host": "kvm3"}}
    assert http.post("/api/v1/jobs", json=body, headers=bearer(RUNNER)).status_code == 202
    again = http.post("/api/v1/jobs", json=body, headers=bearer(RUNNER))
    assert again.status_code == 409 and "\n" not in again.json()["error"]
    assert len(served.spawned) == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"runbook": "maintenance", "params": {"host": "kvm9"}}, "kvm9"),
        ({"runbook": "maintenance", "params": {"host": "kvm3", "concurrency": "many"}}, "concurrency"),
        ({"runbook": "maintenance", "params": {"host": "kvm3"}, "force": True}, "force: unknown field"),
        ({"params": {"host": "kvm3"}}, "runbook: required"),
        ({"runbook": "/etc/evac/mine.yaml"}, "unknown runbook '/etc/evac/mine.yaml'"),
    ],
)
def test_bad_params_are_a_400_in_one_line_and_start_nothing(
    served: FakeServed, body: dict[str, Any], error: str
) -> None:
    answer = client(served).post("/api/v1/jobs", json=body, headers=bearer(TOKENS["read"]))
    assert answer.status_code in (400, 403), answer.text
    assert error in answer.json()["error"] and "\n" not in answer.json()["error"]
    assert served.spawned == [] and served.app.journal.jobs() == []


def test_an_unknown_runbook_is_a_400_naming_the_known_ones(served: FakeServed) -> None:
    answer = client(served).post("/api/v1/jobs", json={"runbook": "maintenace"}, headers=bearer(TOKENS["read"]))
    assert answer.status_code == 400
    assert "unknown runbook 'maintenace' (did you mean 'maintenance'?)" in answer.json()["error"]


def test_no_job_starts_while_the_service_stops(served: FakeServed) -> None:
    served.accepting = False
    answer = client(served).post(
        "/api/v1/jobs", json={"runbook": "maintenance", "params": {"host": "kvm3"}}, headers=bearer(RUNNER)
    )
    assert answer.status_code == 503 and served.app.journal.jobs() == []


def test_cancel_asks_a_running_job_to_stop_and_says_so_for_a_finished_one(served: FakeServed) -> None:
    http = client(served)
    running = running_job(served)
    answer = http.post(f"/api/v1/jobs/{running}/cancel", headers=bearer(CANCELLER))
    assert (answer.status_code, answer.json()["cancel_requested"]) == (202, True)
    assert served.app.journal.job(running).cancel_requested  # type: ignore[union-attr]
    done = http.post(f"/api/v1/jobs/{finished_job(served)}/cancel", headers=bearer(CANCELLER))
    assert (done.status_code, done.json()["state"], done.json()["cancel_requested"]) == (200, "succeeded", False)
    assert http.post("/api/v1/jobs/999/cancel", headers=bearer(CANCELLER)).status_code == 404


# ---------------------------------------------------------------- reads
def test_hosts_show_evacs_state_and_the_guests_of_the_latest_snapshot(served: FakeServed) -> None:
    journal = served.app.journal
    journal.save_definitions("kvm3", {"db1": DOMAIN.format(name="db1", n=1), "db2": DOMAIN.format(name="db2", n=2)})
    journal.set_host_state("kvm4", HostMode.MAINTENANCE, "kernel update", "cli:ops")
    running = running_job(served)
    answer = client(served).get("/api/v1/hosts", headers=bearer(READER)).json()
    hosts = {h["name"]: h for h in answer["hosts"]}
    assert [g["name"] for g in hosts["kvm3"]["guests"]] == ["db1", "db2"]
    assert hosts["kvm3"]["guests"][0] == {
        "name": "db1",
        "memory_mib": 256,
        "vcpus": 2,
        "priority": 5,
        "tags": ["db"],
        "protected": True,
    }
    assert (hosts["kvm4"]["state"], hosts["kvm4"]["reason"], hosts["kvm4"]["jobs"]) == (
        "maintenance",
        "kernel update",
        [running],
    )
    assert (hosts["kvm4"]["guests"], hosts["kvm4"]["snapshot_age"]) == ([], None)
    assert hosts["kvm3"]["health"] is None and answer["monitor"] is False
    assert answer["ha"]["armed"] is True and answer["storm_brake"] is None


def test_hosts_show_the_monitors_verdict_when_this_process_runs_one(served: FakeServed) -> None:
    @dataclass
    class Seen:
        state: str
        reason: str

    @dataclass
    class Watching:
        health: dict[str, Seen]

    served.monitor = Watching({"kvm3": Seen("down", "libvirt: connection lost; probe: no answer")})
    hosts = {h["name"]: h for h in client(served).get("/api/v1/hosts", headers=bearer(READER)).json()["hosts"]}
    assert (hosts["kvm3"]["health"], hosts["kvm3"]["health_reason"]) == (
        "down",
        "libvirt: connection lost; probe: no answer",
    )
    assert hosts["kvm4"]["health"] is None


def test_jobs_are_listed_newest_first_with_a_limit_and_a_state(served: FakeServed) -> None:
    ids = [finished_job(served), finished_job(served, JobState.FAILED), running_job(served)]
    http = client(served)
    listed = http.get("/api/v1/jobs?limit=2", headers=bearer(READER)).json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1][:2]
    failed = http.get("/api/v1/jobs?state=failed", headers=bearer(READER)).json()["jobs"]
    assert [(j["id"], j["error"]) for j in failed] == [(ids[1], "one guest did not move")]
    running = http.get("/api/v1/jobs?state=running", headers=bearer(READER)).json()["jobs"]
    assert [j["id"] for j in running] == [ids[2]]


@pytest.mark.parametrize(
    ("query", "error"),
    [("limit=0", "limit: "), ("limit=501", "limit: "), ("limit=x", "limit: "), ("state=done", "state: ")],
)
def test_a_bad_query_is_a_400_naming_it(served: FakeServed, query: str, error: str) -> None:
    answer = client(served).get(f"/api/v1/jobs?{query}", headers=bearer(READER))
    assert answer.status_code == 400 and answer.json()["error"].startswith(error)


def test_a_job_comes_with_its_steps_items_and_report(served: FakeServed) -> None:
    journal = served.app.journal
    job = running_job(served)
    journal.add_event(Event(EventKind.STEP_STARTED, job, "plan", data={"action": "vm.plan_drain"}))
    journal.save_step(job, "plan", StepState.SUCCEEDED, {"moves": [{"guest": "g1", "target": "kvm3"}]})
    journal.add_event(Event(EventKind.STEP_STARTED, job, "migrate", data={"action": "vm.live_migrate"}))
    journal.save_item(job, "migrate", "g1", ItemState.SUCCEEDED, {"seconds": 1.5}, attempts=1)
    journal.save_step(job, "migrate", StepState.SUCCEEDED, {"items": {"g1": {}}})
    journal.add_event(Event(EventKind.STEP_STARTED, job, "report", data={"action": "report.drain"}))
    journal.save_step(job, "report", StepState.SUCCEEDED, {"rows": [{"guest": "g1", "result": "moved"}]})
    answer = client(served).get(f"/api/v1/jobs/{job}", headers=bearer(READER)).json()
    assert [s["id"] for s in answer["steps"]] == ["plan", "migrate", "report"]
    assert answer["steps"][1]["items"] == [
        {"key": "g1", "state": "succeeded", "error": "", "attempts": 1, "outputs": {"seconds": 1.5}}
    ]
    assert answer["report"] == {"rows": [{"guest": "g1", "result": "moved"}]}
    assert (answer["state"], answer["target"]) == ("running", "kvm4")


@pytest.mark.parametrize("path", ["/api/v1/jobs/404", "/api/v1/jobs/404/events"])
def test_an_unknown_job_is_a_404(served: FakeServed, path: str) -> None:
    answer = client(served).get(path, headers=bearer(READER))
    assert (answer.status_code, answer.json()["error"]) == (404, "no job 404")


# ---------------------------------------------------------------- the events stream
def frames(text: str) -> list[dict[str, str]]:
    parsed = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            key, _, value = line.partition(": ")
            fields[key] = value
        parsed.append(fields)
    return parsed


def test_a_finished_jobs_stream_sends_every_event_then_ends(served: FakeServed) -> None:
    job = finished_job(served, events=4)
    answer = client(served).get(f"/api/v1/jobs/{job}/events", headers=bearer(READER))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    sent = frames(answer.text)
    assert sent[0] == {"retry": "2000"}
    kinds = [f.get("event") for f in sent[1:]]
    assert kinds == ["job.started", "progress", "progress", "job.finished", "end"]
    ids = [int(f["id"]) for f in sent[1:-1]]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert json.loads(sent[2]["data"])["message"] == "0% sent"
    assert json.loads(sent[-1]["data"]) == {"job": job, "state": "succeeded", "error": ""}


def test_last_event_id_resumes_the_stream_after_that_event(served: FakeServed) -> None:
    job = finished_job(served, events=4)
    http = client(served)
    first = frames(http.get(f"/api/v1/jobs/{job}/events", headers=bearer(READER)).text)
    resumed = frames(
        http.get(f"/api/v1/jobs/{job}/events", headers={**bearer(READER), "Last-Event-ID": first[2]["id"]}).text
    )
    assert [f.get("id") for f in resumed[1:-1]] == [first[3]["id"], first[4]["id"]]
    bad = http.get(f"/api/v1/jobs/{job}/events", headers={**bearer(READER), "Last-Event-ID": "x1"})
    assert (bad.status_code, bad.json()["error"]) == (400, "Last-Event-ID: expected an event id (digits)")


@pytest.fixture
def live(served: FakeServed) -> Iterator[tuple[FakeServed, int]]:
    """The API with a fast poll and heartbeat, on a real server, so a stream is read as it comes."""
    app = FastAPI()
    app.include_router(router(served, heartbeat=0.05, poll=0.02))
    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    yield served, server.port
    server.stop()


def test_a_running_jobs_stream_sends_heartbeats_and_new_events_and_ends_with_the_job(
    live: tuple[FakeServed, int],
) -> None:
    served, port = live
    job = running_job(served)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", f"/api/v1/jobs/{job}/events", headers=bearer(READER))
    response = connection.getresponse()
    assert response.status == 200
    lines: list[str] = []

    def read_until(wanted: str) -> None:
        while not any(wanted in line for line in lines):
            line = response.readline().decode()
            assert line, f"the stream ended before {wanted!r}: {lines}"
            lines.append(line)

    read_until("event: job.started")
    read_until(": keepalive")
    served.app.journal.add_event(Event(EventKind.PROGRESS, job, "migrate", "g1", "50% sent"))
    read_until("50% sent")
    served.app.journal.finish_job(job, JobState.SUCCEEDED)
    served.app.journal.add_event(Event(EventKind.JOB_FINISHED, job, data={"state": "succeeded"}))
    read_until("event: end")
    assert json.loads(response.readline().decode().removeprefix("data: ")) == {
        "job": job,
        "state": "succeeded",
        "error": "",
    }
    assert response.readline() == b"\n" and response.readline() == b""  # and then the stream ends
    connection.close()


def test_streams_have_places_of_their_own_and_a_503_when_all_are_taken(live: tuple[FakeServed, int]) -> None:
    served, port = live
    job = running_job(served)
    opened = []
    from evac.web import WebSettings

    limit = WebSettings().max_streams
    for _ in range(limit):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", f"/api/v1/jobs/{job}/events", headers=bearer(READER))
        assert connection.getresponse().status == 200
        opened.append(connection)
    extra = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    extra.request("GET", f"/api/v1/jobs/{job}/events", headers=bearer(READER))
    refused = extra.getresponse()
    assert refused.status == 503 and b"event streams open" in refused.read()
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    other.request("GET", "/api/v1/jobs", headers=bearer(READER))
    assert other.getresponse().status == 200  # the application's own slots are all free
    for connection in [*opened, extra, other]:
        connection.close()


# ---------------------------------------------------------------- the status page's session
def session_cookie(http: TestClient, token: str = READER) -> str:
    answer = http.post("/api/v1/session", headers=bearer(token))
    assert answer.status_code == 204
    return str(answer.headers["set-cookie"])


def test_the_session_cookie_is_httponly_strict_and_reads(served: FakeServed) -> None:
    http = client(served)
    cookie = session_cookie(http)
    assert "; HttpOnly" in cookie and "; SameSite=Strict" in cookie and "; Path=/" in cookie
    assert "Max-Age=28800" in cookie and READER not in cookie
    assert http.get("/api/v1/hosts").status_code == 200  # the client keeps the cookie
    assert http.get(f"/api/v1/jobs/{finished_job(served)}/events").status_code == 200


def test_a_session_never_starts_or_cancels_anything_even_for_a_token_that_may(served: FakeServed) -> None:
    http = client(served)
    session_cookie(http, TOKENS["cancel"])  # this token may run anything
    start = http.post("/api/v1/jobs", json={"runbook": "maintenance", "params": {"host": "kvm3"}})
    assert start.status_code == 401 and "a session cookie only reads" in start.json()["error"]
    cancel = http.post(f"/api/v1/jobs/{running_job(served)}/cancel")
    assert cancel.status_code == 401
    assert served.spawned == []


def test_an_expired_or_forged_session_is_a_401(served: FakeServed) -> None:
    settings = served.config.sections["api"]
    reader = next(t for t in settings.tokens if t.name == "reader")
    http = client(served)
    expired, _ = make_session(reader, 1_000_000.0, 1.0)
    http.cookies.set("evac_session", expired)
    assert http.get("/api/v1/hosts").status_code == 401
    good, _ = make_session(reader, 4_000_000_000.0, 1.0)
    forged = good.replace("reader", "all-but-read")
    http.cookies.set("evac_session", forged)
    assert http.get("/api/v1/hosts").status_code == 401


def test_a_token_without_read_gets_no_session(served: FakeServed) -> None:
    assert client(served).post("/api/v1/session", headers=bearer(RUNNER)).status_code == 403


def test_signing_out_drops_the_cookie(served: FakeServed) -> None:
    http = client(served)
    session_cookie(http)
    answer = http.delete("/api/v1/session")
    assert answer.status_code == 204 and "Max-Age=0" in answer.headers["set-cookie"]
    assert http.get("/api/v1/hosts").status_code == 401


# ---------------------------------------------------------------- off, limited, audited
def test_without_an_api_section_every_api_route_is_a_404_and_healthz_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_served(tmp_path, monkeypatch, api=False)
    http = client(served)
    for path in ("/api/v1/hosts", "/api/v1/jobs", "/api/v1/jobs/1", "/api/v1/jobs/1/events"):
        answer = http.get(path, headers=bearer(READER))
        assert answer.status_code == 404 and "the REST API is off" in answer.json()["error"]
    assert http.post("/api/v1/jobs", json={"runbook": "maintenance"}, headers=bearer(RUNNER)).status_code == 404
    assert http.get("/healthz").json() == {"ok": True}


def test_unauthenticated_requests_are_rate_limited_per_source_and_tokens_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_served(tmp_path, monkeypatch, replace(api_settings(), rate_per_second=0.001, burst=2))
    http = client(served)
    statuses = [http.get("/api/v1/hosts", headers=bearer("guess-number-one-two-three")).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    limited = http.get("/api/v1/hosts")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert all(http.get("/api/v1/hosts", headers=bearer(READER)).status_code == 200 for _ in range(5))
    assert client(served, "198.51.100.1").get("/api/v1/hosts").status_code == 401  # another source


def test_refusals_are_audited_once_a_while_naming_who_and_why_never_the_token(served: FakeServed) -> None:
    http = client(served)
    for _ in range(3):
        http.get("/api/v1/hosts", headers=bearer("a-wrong-token-0123456789"))
    http.post("/api/v1/jobs/1/cancel", headers=bearer(READER))
    rows = [
        (a.actor, a.action, a.target, a.detail["status"])
        for a in served.app.journal.audit_log(50)
        if a.action.startswith("api.")
    ]
    assert sorted(rows) == [
        ("api", "api.unauthorized", "GET /api/v1/hosts", 401),
        ("api:reader", "api.forbidden", "POST /api/v1/jobs/{job_id}/cancel", 403),
    ]
    text = json.dumps([a.__dict__ for a in served.app.journal.audit_log(50)], default=str)
    assert "a-wrong-token" not in text and READER not in text


# ---------------------------------------------------------------- the api: section
def write_config(tmp_path: Path, api: str) -> Path:
    (tmp_path / "ops.token").write_text("ops-token-0123456789abcdef\n")
    (tmp_path / "ops.token").chmod(0o600)
    path = tmp_path / "evac.yaml"
    path.write_text(f"inventory: hosts.yaml\njournal: {tmp_path}/j.db\n{api}")
    return path


def test_the_api_section_reads_tokens_from_files_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVAC_API_GRAFANA", "grafana-token-0123456789")
    path = write_config(
        tmp_path,
        "api:\n  tokens:\n"
        "    - {name: ops, token: 'file:ops.token', scopes: [read, 'run:maintenance', cancel]}\n"
        "    - {name: grafana, token: 'env:EVAC_API_GRAFANA', scopes: [read]}\n"
        "  session_hours: 2\n",
    )
    pm = plugin_manager()
    settings = load_config(path, pm).sections["api"]
    assert [(t.name, t.token, sorted(t.scopes)) for t in settings.tokens] == [
        ("ops", "ops-token-0123456789abcdef", ["cancel", "read", "run:maintenance"]),
        ("grafana", "grafana-token-0123456789", ["read"]),
    ]
    assert settings.session_hours == 2.0 and "0123456789" not in repr(settings)


@pytest.mark.parametrize(
    ("section", "error"),
    [
        (
            "api:\n  tokens:\n    - {name: ops, token: 'file:ops.token', scopes: [raed]}\n",
            "evac.yaml:5: api.tokens[0].scopes[0]: unknown scope 'raed' (did you mean 'read'?)",
        ),
        (
            "api:\n  tokens:\n    - {name: ops, token: 'inline-secret-0123456789', scopes: [read]}\n",
            "evac.yaml:5: api.tokens[0].token: secrets are given as env:NAME or file:PATH, not inline",
        ),
        (
            "api:\n  tokens:\n    - {name: ops, token: 'env:EVAC_NOT_SET_ANYWHERE', scopes: [read]}\n",
            "evac.yaml:5: api.tokens[0].token: environment variable EVAC_NOT_SET_ANYWHERE is not set",
        ),
        (
            "api:\n  tokens:\n    - {name: ops, token: 'env:EVAC_SHORT', scopes: [read]}\n",
            "evac.yaml:5: api.tokens[0].token: the token is 5 characters; use at least 16 (`openssl rand -hex 32`)",
        ),
        (
            "api:\n  tokens:\n    - {name: ops, token: 'file:ops.token'}\n",
            "evac.yaml:5: api.tokens[0].scopes: required",
        ),
        (
            "api:\n  tokens:\n    - {name: ops, token: 'file:ops.token', scopes: [read]}\n"
            "    - {name: ops, token: 'env:EVAC_LONG', scopes: [read]}\n",
            "evac.yaml:6: api.tokens[1].name: 'ops' is named twice",
        ),
        (
            "api:\n  tokens:\n    - {name: ops, token: 'file:ops.token', scopes: [read]}\n"
            "    - {name: again, token: 'file:ops.token', scopes: [read]}\n",
            "evac.yaml:6: api.tokens[1].token: the same token as 'ops'",
        ),
        ("api:\n  tokenz: []\n", "evac.yaml:4: api.tokenz: unknown field (did you mean 'tokens'?)"),
        ("api:\n  session_hours: 0\n", "evac.yaml:4: api.session_hours: expected hours > 0"),
        ("api: [read]\n", "evac.yaml:3: api: expected a mapping"),
    ],
)
def test_a_mistake_in_the_api_section_is_one_line_naming_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, error: str
) -> None:
    monkeypatch.setenv("EVAC_SHORT", "short")
    monkeypatch.setenv("EVAC_LONG", "long-enough-token-0123456789")
    path = write_config(tmp_path, section)
    with pytest.raises(ConfigError) as raised:
        load_config(path, plugin_manager())
    message = str(raised.value)
    assert message.startswith(str(path) + error.removeprefix("evac.yaml")), message
    assert "\n" not in message and "0123456789" not in message


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=40))
SECTIONS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["tokens", "name", "token", "scopes", "burst", "session_hours", "x"]), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


@given(section=SECTIONS)
@settings(max_examples=150, deadline=None)
def test_any_api_section_is_settings_or_one_line_naming_the_field(section: Any) -> None:
    document = load_text(yaml.safe_dump({"api": section}), "evac.yaml")
    try:
        parse_api(document.get("api"), "evac.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("evac.yaml:") and "\n" not in str(exc)


def test_an_api_section_without_tokens_refuses_everyone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_api(None, "evac.yaml") == ApiSettings()
    served = make_served(tmp_path, monkeypatch, ApiSettings())
    assert client(served).get("/api/v1/hosts", headers=bearer(READER)).status_code == 401


# ---------------------------------------------------------------- the status page
def test_the_status_page_and_its_files_are_served_with_a_strict_policy(served: FakeServed) -> None:
    http = client(served)
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text and "http" not in page.text.replace('href="/openapi.json"', "")
    assert http.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert http.get("/static/style.css").status_code == 200
    assert http.get("/static/secrets.txt").status_code == 404


def test_the_api_reads_its_settings_from_the_config_sections(served: FakeServed) -> None:
    assert Api(served).settings is served.config.sections["api"]
