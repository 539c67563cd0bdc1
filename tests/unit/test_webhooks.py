"""The webhook routes, mounted on a bare FastAPI app: a real App on an inventory of hosts
that do not exist, a real journal; only ``jobs.spawn`` is stubbed, so nothing runs."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from evac.app import App
from evac.config import ServiceConfig, WebhookSettings, default_config, load_config
from evac.errors import ConfigError
from evac.inventory import HostSpec, Inventory
from evac.jobs import Started
from evac.metrics import Metrics
from evac.plugins import plugin_manager
from evac.signatures import SIGNATURE_HEADER, signed_headers
from evac.states import JobState
from evac.webhooks import AUDIT_EVERY, AuditOnce, router, source_of

TOKEN, SECRET = "t0ken", "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SOURCE = "203.0.113.7"
AM, EVAC = "/hooks/alertmanager", "/hooks/evacuate"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeServed:
    """What ``evac.web.Served`` gives the webhooks, less health()."""

    app: App
    config: ServiceConfig
    metrics: Metrics = field(default_factory=Metrics)
    accepting: bool = True
    spawned: list[Started] = field(default_factory=list)

    def count(self, hook: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("evac_webhooks_total", {"hook": hook, "outcome": outcome})
        return value or 0.0

    def audits(self, prefix: str = "") -> list[tuple[str, str]]:
        return [(a.action, a.target) for a in self.app.journal.audit_log(1000) if a.action.startswith(prefix)]


def make_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> FakeServed:
    inventory = tmp_path / "hosts.yaml"
    if not inventory.exists():
        uri = f"qemu+tcp://127.0.0.1:{closed_port()}/system"  # nothing answers: no libvirt is touched
        inventory.write_text(
            "hosts:\n"
            f"  - {{name: kvm3, uri: '{uri}', address: 198.18.0.3}}\n"
            f"  - {{name: kvm4, uri: '{uri}', address: 198.18.0.4}}\n"
        )
    doctor = bool(settings.pop("require_doctor", False))  # nothing here is a real host for the doctor to check
    hooks = WebhookSettings(
        **{"token": TOKEN, "hmac_secret": SECRET, "rate_per_second": 1e6, "burst": 10**6, **settings}
    )
    defaults = default_config(inventory, tmp_path / "journal.db")
    config = replace(defaults, webhooks=hooks, monitor=replace(defaults.monitor, require_doctor=doctor))
    served = FakeServed(App.from_config(config), config)
    monkeypatch.setattr(served.app.jobs, "spawn", served.spawned.append)
    return served


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServed:
    return make_served(tmp_path, monkeypatch)


def client(served: FakeServed, source: str = SOURCE, clock: Callable[[], float] = time.time) -> TestClient:
    app = FastAPI()
    app.include_router(router(served, clock))
    return TestClient(app, client=(source, 50000))


def signed(http: TestClient, path: str, payload: dict[str, Any], now: float | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **signed_headers(SECRET, path, body, now)}
    response: httpx.Response = http.post(path, content=body, headers=headers)
    return response


def alert(
    instance: str, status: str = "firing", fingerprint: str = "fp1", starts: str = "2026-11-27T07:00:00Z"
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HostDown", "instance": instance},
        "annotations": {},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fingerprint,
    }


def batch(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "evac", "groupKey": "{}:{}", "alerts": list(alerts)}


def results(response: httpx.Response) -> list[str]:
    return [r["result"] for r in response.json()["results"]]


# ---------------------------------------------------------------- credentials
def test_the_bearer_token_starts_a_failover_from_an_alert(served: FakeServed) -> None:
    response = client(served).post(AM, json=batch(alert("198.18.0.3:9100")), headers=BEARER)
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert (result["result"], result["host"], result["runbook"]) == ("accepted", "kvm3", "host-failure")
    assert [s.job for s in served.spawned] == [result["job"]]


def test_an_alert_about_a_host_the_doctor_never_checked_fences_nothing_and_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_served(tmp_path, monkeypatch, require_doctor=True)
    (result,) = client(served).post(AM, json=batch(alert("198.18.0.3:9100")), headers=BEARER).json()["results"]
    assert (result["result"], result["host"]) == ("refused", "kvm3")
    assert result["why"] == (
        "kvm3: automatic fencing refused: evac doctor: never checked"
        " (run `evac doctor kvm3`, or set monitor.require_doctor: false)"
    )
    assert served.spawned == [] and served.app.journal.jobs() == []


@pytest.mark.parametrize("path", [AM, EVAC])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_a_missing_or_wrong_token_gets_401_and_starts_nothing(
    served: FakeServed, path: str, headers: dict[str, str]
) -> None:
    response = client(served).post(path, json={"host": "kvm3", **batch(alert("kvm3"))}, headers=headers)
    assert response.status_code == 401 and "missing or wrong credentials" in response.json()["error"]
    assert served.spawned == [] and served.app.journal.jobs() == []


def test_a_signed_request_starts_a_job(served: FakeServed) -> None:
    response = signed(client(served), EVAC, {"host": "kvm3", "reason": "kernel update"})
    assert response.status_code == 202 and response.json()["host"] == "kvm3"
    assert [s.job for s in served.spawned] == [response.json()["job"]]


@pytest.mark.parametrize(
    ("path", "payload"), [(EVAC, {"host": "kvm3"}), (AM, batch(alert("kvm3")))], ids=["evacuate", "alertmanager"]
)
def test_a_captured_signed_request_cannot_be_replayed(served: FakeServed, path: str, payload: dict[str, Any]) -> None:
    http = client(served)
    body = json.dumps(payload).encode()
    captured = {"Content-Type": "application/json", **signed_headers(SECRET, path, body)}
    assert http.post(path, content=body, headers=captured).status_code in (200, 202)
    replay = http.post(path, content=body, headers=captured)
    assert replay.status_code == 401 and replay.json()["error"].startswith("replayed")
    assert len(served.spawned) == 1


def test_a_replay_sent_to_another_replica_on_the_same_journal_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, other = make_served(tmp_path, monkeypatch), make_served(tmp_path, monkeypatch)
    body = json.dumps({"host": "kvm3"}).encode()
    captured = signed_headers(SECRET, EVAC, body)
    assert client(one).post(EVAC, content=body, headers=captured).status_code == 202
    replay = client(other).post(EVAC, content=body, headers=captured)
    assert replay.status_code == 401 and replay.json()["error"].startswith("replayed")


@pytest.mark.parametrize("path", [AM, EVAC])
def test_the_old_body_only_signature_is_refused_saying_how_to_sign_now(served: FakeServed, path: str) -> None:
    import hashlib
    import hmac

    body = json.dumps({"host": "kvm3", **batch(alert("kvm3"))}).encode()
    old = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client(served).post(path, content=body, headers={SIGNATURE_HEADER: old})
    assert response.status_code == 401
    assert "can be replayed forever" in response.json()["error"] and "v1=" in response.json()["error"]
    assert served.spawned == []


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_signature_over_five_minutes_from_evacs_clock_gets_401(served: FakeServed, skew: int) -> None:
    now = time.time()
    response = signed(client(served, clock=lambda: now + skew), EVAC, {"host": "kvm3"}, now=now)
    assert response.status_code == 401 and "window" in response.json()["error"]


def test_a_signature_made_for_the_other_hook_gets_401(served: FakeServed) -> None:
    body = json.dumps({"host": "kvm3"}).encode()
    response = client(served).post(EVAC, content=body, headers=signed_headers(SECRET, AM, body))
    assert response.status_code == 401 and "does not match" in response.json()["error"]


def test_signed_requests_are_refused_when_no_secret_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_served(tmp_path, monkeypatch, hmac_secret="")
    response = signed(client(served), EVAC, {"host": "kvm3"})
    assert response.status_code == 401 and "webhooks.hmac_secret" in response.json()["error"]


def test_without_a_token_or_a_secret_the_webhooks_are_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = make_served(tmp_path, monkeypatch, token="", hmac_secret="")
    response = client(served).post(EVAC, json={"host": "kvm3"}, headers={"Authorization": "Bearer "})
    assert response.status_code == 403 and "webhooks.token" in response.json()["error"]


# ---------------------------------------------------------------- Alertmanager batches
def test_a_body_that_is_not_a_valid_batch_gets_400_naming_the_field_and_starts_nothing(served: FakeServed) -> None:
    response = client(served).post(AM, json=batch(alert("kvm3"), {"labels": {"instance": "kvm4"}}), headers=BEARER)
    assert (response.status_code, response.json()["error"]) == (400, "alerts[1].status: required")
    assert served.spawned == [] and served.app.journal.jobs() == []


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"version": "3", "alerts": []}, "version: expected 4, got '3'"),
        ({"version": "4"}, "alerts: required"),
        ({"version": "4", "alerts": {}}, "alerts: expected a list, got an object"),
        (
            {"version": "4", "alerts": [{"status": "firing", "labels": {"instance": 3}}]},
            "alerts[0].labels.instance: expected a string, got a number",
        ),
    ],
)
def test_a_malformed_batch_gets_400_naming_the_field(served: FakeServed, payload: dict[str, Any], error: str) -> None:
    response = client(served).post(AM, json=payload, headers=BEARER)
    assert (response.status_code, response.json()["error"]) == (400, error)


def test_in_a_valid_batch_each_alert_stands_alone_with_its_own_result(served: FakeServed) -> None:
    no_label = alert("kvm4", fingerprint="fp2")
    del no_label["labels"]["instance"]
    response = client(served).post(
        AM,
        json=batch(
            alert("kvm3", status="pending", fingerprint="fp0"),
            alert("198.18.0.3:9100", fingerprint="fp1"),
            no_label,
            alert("kvm9:9100", fingerprint="fp3"),
            alert("kvm4", status="resolved", fingerprint="fp4"),
        ),
        headers=BEARER,
    )
    assert response.status_code == 200
    assert results(response) == ["invalid", "accepted", "ignored", "ignored", "resolved"]
    whys = [r.get("why") for r in response.json()["results"]]
    assert whys[0] == "status: expected firing or resolved, got 'pending'"
    assert whys[2:4] == ["no 'instance' label", "unknown host"]
    assert [s.target for s in served.spawned] == ["kvm3"]  # the bad alert dropped no failover


def test_a_repeat_of_an_alert_is_a_duplicate_and_starts_nothing(served: FakeServed) -> None:
    http = client(served)
    assert results(http.post(AM, json=batch(alert("kvm3")), headers=BEARER)) == ["accepted"]
    assert results(http.post(AM, json=batch(alert("kvm3")), headers=BEARER)) == ["duplicate"]
    assert len(served.spawned) == 1 and len(served.app.journal.jobs()) == 1


def test_the_same_fingerprint_firing_again_later_is_a_new_alert(served: FakeServed) -> None:
    http = client(served)
    (first,) = http.post(AM, json=batch(alert("kvm3")), headers=BEARER).json()["results"]
    served.app.journal.finish_job(first["job"], JobState.SUCCEEDED)
    again = alert("kvm3", starts="2026-11-27T09:30:00Z")
    assert results(http.post(AM, json=batch(again), headers=BEARER)) == ["accepted"]


def test_a_resolved_alert_is_recorded_and_starts_nothing(served: FakeServed) -> None:
    response = client(served).post(AM, json=batch(alert("kvm3", status="resolved")), headers=BEARER)
    assert results(response) == ["resolved"] and served.spawned == []
    assert ("alert.resolved", "kvm3") in served.audits()


def test_an_alert_for_a_host_a_job_holds_is_answered_refused_with_why(served: FakeServed) -> None:
    http = client(served)
    http.post(AM, json=batch(alert("kvm3")), headers=BEARER)
    (result,) = http.post(AM, json=batch(alert("kvm3", fingerprint="other")), headers=BEARER).json()["results"]
    assert result["result"] == "refused" and "holds host:kvm3" in result["why"]


def test_an_alert_the_front_door_refused_is_judged_again_when_alertmanager_repeats_it(served: FakeServed) -> None:
    http = client(served)
    (first,) = http.post(AM, json=batch(alert("kvm3")), headers=BEARER).json()["results"]
    other = batch(alert("kvm3", fingerprint="other"))
    assert results(http.post(AM, json=other, headers=BEARER)) == ["refused"]  # the first job holds kvm3
    served.app.journal.finish_job(first["job"], JobState.FAILED, "test")
    assert results(http.post(AM, json=other, headers=BEARER)) == ["accepted"]  # not a "duplicate"


def test_an_answered_request_is_counted_once(served: FakeServed) -> None:
    client(served).post(EVAC, json={"host": "kvm9"}, headers=BEARER)
    assert served.count("evacuate", "404") == 1


def test_alerts_not_named_in_webhooks_alertnames_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = make_served(tmp_path, monkeypatch, alertnames=("NodeDown",))
    (result,) = client(served).post(AM, json=batch(alert("kvm3")), headers=BEARER).json()["results"]
    assert result["result"] == "ignored" and "webhooks.alertnames" in result["why"] and served.spawned == []


# ---------------------------------------------------------------- the host
def ambiguous_fleet(served: FakeServed) -> None:
    """An inventory the loader would refuse: kvm4's name is kvm3's address."""
    uri = served.app.inventory.hosts[0].uri
    fleet = (HostSpec("kvm3", uri, address="kvm4"), HostSpec("kvm4", uri, address="198.18.0.4"))
    served.app.__dict__["inventory"] = Inventory(fleet)


def test_an_alert_for_an_ambiguous_host_is_invalid_naming_both_and_drains_neither(served: FakeServed) -> None:
    ambiguous_fleet(served)
    (result,) = client(served).post(AM, json=batch(alert("kvm4:9100")), headers=BEARER).json()["results"]
    assert result["result"] == "invalid"
    assert "the name of host 'kvm4' and the address of host 'kvm3'" in result["why"]
    assert served.spawned == [] and served.app.journal.jobs() == []


def test_an_evacuate_of_an_ambiguous_host_gets_409_naming_both_and_drains_neither(served: FakeServed) -> None:
    ambiguous_fleet(served)
    response = client(served).post(EVAC, json={"host": "kvm4"}, headers=BEARER)
    assert response.status_code == 409 and response.json()["candidates"] == ["kvm4", "kvm3"]
    assert served.spawned == [] and served.app.journal.jobs() == []


def test_an_evacuate_by_address_finds_the_host(served: FakeServed) -> None:
    response = client(served).post(EVAC, json={"host": "198.18.0.4", "mode": "failover"}, headers=BEARER)
    assert response.status_code == 202 and response.json()["host"] == "kvm4"


def test_an_evacuate_of_an_unknown_host_gets_404_and_starts_nothing(served: FakeServed) -> None:
    response = client(served).post(EVAC, json={"host": "kvm9"}, headers=BEARER)
    assert response.status_code == 404 and response.json() == {"error": "unknown host 'kvm9'", "ignored": True}
    assert ("evacuate.unknown_host", "kvm9") in served.audits()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"host": "kvm3", "mode": "teleport"}, "mode: expected drain or failover, got 'teleport'"),
        ({"host": "kvm3", "mod": "failover"}, "mod: unknown field"),
        ({"reason": "x"}, "host: required"),
        ({"host": 3}, "host: expected a string, got a number"),
    ],
)
def test_an_evacuate_body_that_is_not_valid_gets_400_naming_the_field(
    served: FakeServed, payload: dict[str, Any], error: str
) -> None:
    response = client(served).post(EVAC, json=payload, headers=BEARER)
    assert (response.status_code, response.json()["error"]) == (400, error)


# ---------------------------------------------------------------- bodies
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\xff\xfe", "body: not UTF-8"),
        (b'{"version": "4", "alerts": [}', "body: invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "body: invalid JSON"),
        (b'{"version": NaN}', "body: invalid JSON: NaN is not JSON"),
        (b'{"version": ' + b"9" * 5000 + b"}", "body: invalid JSON"),
        (b"[]", "body: expected a JSON object, got list"),
    ],
    ids=["not-utf8", "broken", "deep", "nan", "huge-int", "not-an-object"],
)
def test_a_body_that_is_not_utf8_json_gets_400(served: FakeServed, body: bytes, error: str) -> None:
    response = client(served).post(AM, content=body, headers=BEARER)
    assert response.status_code == 400 and response.json()["error"].startswith(error)


def test_a_body_over_the_limit_gets_413_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = make_served(tmp_path, monkeypatch, max_body_bytes=1024)
    response = client(served).post(AM, content=b"x" * 1025, headers=BEARER)
    assert response.status_code == 413 and "1024 byte limit" in response.json()["error"]


def test_a_streamed_body_without_a_length_is_cut_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = make_served(tmp_path, monkeypatch, max_body_bytes=1024)
    response = client(served).post(AM, content=iter([b"x" * 600, b"x" * 600, b"x" * 10**6]), headers=BEARER)
    assert response.status_code == 413


# ---------------------------------------------------------------- rate, refusals, shutdown
def test_a_source_over_its_rate_gets_429_with_retry_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = make_served(tmp_path, monkeypatch, rate_per_second=0.01, burst=2)
    http = client(served)
    assert [http.post(EVAC, json={"host": "kvm9"}).status_code for _ in range(3)] == [401, 401, 429]
    refused = http.post(EVAC, json={"host": "kvm9"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


def test_a_sender_with_the_token_is_never_limited_so_a_flood_from_its_address_drops_no_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_served(tmp_path, monkeypatch, rate_per_second=0.01, burst=2)
    http = client(served)
    assert [http.post(AM, json={}).status_code for _ in range(3)] == [401, 401, 429]
    answered = http.post(AM, json=batch(alert("kvm3")), headers=BEARER)
    assert answered.status_code == 200 and results(answered) == ["accepted"]


def test_an_ipv6_sender_counts_as_its_64_so_rotating_addresses_gains_nothing() -> None:
    assert source_of("2001:db8:1:2::7") == source_of("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert source_of("::ffff:198.51.100.1") == "198.51.100.1"
    assert (source_of("198.51.100.1"), source_of("::1"), source_of("testclient")) == (
        "198.51.100.1",
        "::1",
        "testclient",
    )


def test_each_source_address_has_its_own_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = make_served(tmp_path, monkeypatch, rate_per_second=0.01, burst=1)
    app = FastAPI()
    app.include_router(router(served))
    flooder, other = TestClient(app, client=("198.51.100.1", 1)), TestClient(app, client=("198.51.100.2", 1))
    assert [flooder.post(AM, json={}).status_code for _ in range(2)] == [401, 429]
    assert other.post(AM, json={}).status_code == 401


def test_refused_requests_are_counted_by_hook_and_status_never_by_path_or_query(served: FakeServed) -> None:
    http = client(served)
    for n in range(50):
        http.post(f"{AM}?token=secret{n}", json={})
    http.post(EVAC, content=b"\xff", headers=BEARER)
    assert served.count("alertmanager", "401") == 50 and served.count("evacuate", "400") == 1
    text = served.metrics.text().decode()
    assert "secret" not in text and text.count("evac_webhooks_total{") == 2


def test_refused_requests_are_audited_once_per_source_hook_and_reason_not_once_each(served: FakeServed) -> None:
    http, elsewhere = client(served), client(served, source="198.51.100.9")
    for _ in range(100):
        http.post(AM, json={})
    http.post(EVAC, json={})
    http.post(AM, content=b"\xff", headers=BEARER)
    elsewhere.post(AM, json={})
    assert sorted(served.audits("alertmanager.") + served.audits("evacuate.")) == [
        ("alertmanager.bad_body", SOURCE),
        ("alertmanager.unauthorized", "198.51.100.9"),
        ("alertmanager.unauthorized", SOURCE),
        ("evacuate.unauthorized", SOURCE),
    ]


def test_a_refusal_is_audited_again_once_its_ten_minutes_are_over() -> None:
    seen: dict[str, float] = {}
    now = [0.0]

    def first_seen(key: str, ttl: float) -> bool:  # the journal's contract, on the same clock
        fresh = seen.get(key, -1.0) < now[0]
        if fresh:
            seen[key] = now[0] + ttl
        return fresh

    once = AuditOnce(first_seen, clock=lambda: now[0])
    assert [once("am:unauthorized:a"), once("am:unauthorized:a")] == [True, False]
    now[0] += AUDIT_EVERY + 1
    assert once("am:unauthorized:a")


def test_a_refusal_another_replica_already_audited_is_not_audited_again() -> None:
    once = AuditOnce(lambda key, ttl: False)  # the journal says: seen
    assert not once("am:unauthorized:a")


def test_while_the_service_stops_new_webhook_work_gets_503(served: FakeServed) -> None:
    served.accepting = False
    http = client(served)
    assert http.post(AM, json=batch(alert("kvm3")), headers=BEARER).status_code == 503
    assert http.post(EVAC, json={"host": "kvm3"}, headers=BEARER).status_code == 503
    assert served.spawned == [] and served.count("evacuate", "503") == 1


# ---------------------------------------------------------------- settings and description
def test_the_rate_limit_is_set_in_the_webhooks_section(tmp_path: Path) -> None:
    (tmp_path / "evac.yaml").write_text("webhooks: {rate_per_second: 2.5, burst: 5}\n")
    hooks = load_config(tmp_path / "evac.yaml", plugin_manager()).webhooks
    assert (hooks.rate_per_second, hooks.burst) == (2.5, 5)
    assert WebhookSettings().rate_per_second == 10 and WebhookSettings().burst == 20


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("webhooks: {rate_per_second: 0}", "evac.yaml:1: webhooks.rate_per_second: expected a number > 0, got 0.0"),
        ("webhooks: {burst: 1.5}", "evac.yaml:1: webhooks.burst: expected a whole number >= 0, got 1.5"),
        ("webhooks: {burst: 0}", "evac.yaml:1: webhooks.burst: expected a number > 0, got 0.0"),
    ],
)
def test_a_rate_limit_that_cannot_limit_is_refused_naming_the_field(tmp_path: Path, line: str, error: str) -> None:
    (tmp_path / "evac.yaml").write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "evac.yaml", plugin_manager())
    assert str(caught.value).endswith(error)


def test_the_openapi_document_describes_both_request_bodies(served: FakeServed) -> None:
    app = FastAPI()
    app.include_router(router(served))
    paths = app.openapi()["paths"]
    evacuate = paths[EVAC]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert evacuate["required"] == ["host"] and evacuate["properties"]["mode"]["enum"] == ["drain", "failover"]
    alerts = paths[AM]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["alerts"]
    assert set(alerts["items"]["required"]) == {"status", "labels"}
    assert {"400", "401", "413", "429", "503"} <= set(paths[AM]["post"]["responses"])


def test_a_journal_that_cannot_take_the_audit_row_does_not_turn_a_refusal_into_a_500(
    served: FakeServed, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(served.app.journal, "audit", broken)
    assert client(served).post(AM, json={}).status_code == 401
