"""evac.web in-process: JSON errors naming the field, the header and body deadlines, the
concurrency bound that /healthz bypasses, route-template metrics, mounts, binding."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from evac.app import App
from evac.config import load_config
from evac.errors import ClusterUnavailable, EvacError
from evac.plugins import plugin_manager
from evac.service import Service
from evac.web import WebServer, WebSettings, build_app, field_error
from evac.webmetrics import RequestMetrics, route_template
from tests.conftest import poll_until

TOKEN = "scrape-t0ken"


class Alert(BaseModel):
    status: str
    labels: dict[str, str]


class Batch(BaseModel):
    version: str
    alerts: list[Alert]


class Evacuate(BaseModel):
    host: str
    mode: Literal["drain", "failover"] = "drain"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setenv("EVAC_SCRAPE_TOKEN", TOKEN)
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    (tmp_path / "evac.yaml").write_text(
        f"inventory: hosts.yaml\njournal: {tmp_path}/j.db\nmonitor: {{enabled: false}}\n"
        "listen: {port: 0, metrics_token: 'env:EVAC_SCRAPE_TOKEN'}\n"
    )
    pm = plugin_manager(load_entrypoints=False)
    made = Service(App.from_config(load_config(tmp_path / "evac.yaml", pm), pm))
    yield made
    made.http.stop()


Serve = Callable[..., tuple[FastAPI, WebServer]]


@pytest.fixture
def serve(service: Service) -> Iterator[Serve]:
    """build_app(service) plus probe routes, on its own WebServer with the given settings."""
    servers: list[WebServer] = []
    gate = threading.Event()
    entered = threading.Event()

    def make(**settings: Any) -> tuple[FastAPI, WebServer]:
        web = build_app(service, {"/echo": echo})

        @web.post("/probe/batch")
        def batch(body: Batch) -> dict[str, int]:
            return {"alerts": len(body.alerts)}

        @web.post("/probe/evacuate")
        def evacuate(body: Evacuate) -> dict[str, str]:
            return {"host": body.host}

        @web.get("/probe/etcd")
        def etcd() -> dict[str, str]:
            raise ClusterUnavailable("etcd: no endpoint answers (https://a:2379): timed out")

        @web.get("/probe/block")
        def block() -> dict[str, bool]:
            entered.set()
            return {"released": gate.wait(30)}

        server = WebServer(
            web, "127.0.0.1", 0, WebSettings(**settings), RequestMetrics(web.router.routes, service.metrics)
        )
        server.start()
        servers.append(server)
        return web, server

    make.gate = gate  # type: ignore[attr-defined]
    make.entered = entered  # type: ignore[attr-defined]
    yield make
    gate.set()
    for server in servers:
        server.stop()


def call(
    server: WebServer, path: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, dict[str, Any] | str]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def error(reply: tuple[int, Any]) -> tuple[int, str]:
    return reply[0], reply[1]["error"]


def test_a_journal_that_cannot_answer_is_a_503_saying_why_in_one_line(serve: Serve) -> None:
    _, server = serve()
    assert error(call(server, "/probe/etcd")) == (503, "etcd: no endpoint answers (https://a:2379): timed out")


def test_a_validation_error_is_a_400_naming_the_field(serve: Serve) -> None:
    _, server = serve()
    body = json.dumps({"version": "4", "alerts": [{"labels": {}}]}).encode()
    assert error(call(server, "/probe/batch", body)) == (400, "alerts[0].status: required")
    body = json.dumps({"version": "4", "alerts": "no"}).encode()
    assert error(call(server, "/probe/batch", body)) == (400, "alerts: expected list")


def test_a_literal_is_refused_naming_the_choices_and_what_was_given(serve: Serve) -> None:
    _, server = serve()
    reply = call(server, "/probe/evacuate", json.dumps({"host": "h1", "mode": "teleport"}).encode())
    assert error(reply) == (400, "mode: expected drain or failover, got 'teleport'")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"version": "4", "alerts": [}', "body: invalid JSON"),
        (b'{"host": "\xff\xfe"}', "body: not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "body: nested too deeply"),
    ],
    ids=["invalid", "not-utf8", "nested"],
)
def test_a_body_that_is_not_json_is_a_400_saying_why(serve: Serve, body: bytes, message: str) -> None:
    _, server = serve()
    status, why = error(call(server, "/probe/batch", body))
    assert status == 400 and why.startswith(message), why


def test_field_error_names_nested_fields_in_one_line() -> None:
    errors = [{"type": "missing", "loc": ("body", "alerts", 3, "labels"), "msg": "Field required"}]
    assert field_error(errors) == "alerts[3].labels: required"
    assert field_error([{"type": "string_type", "loc": ("body", "host"), "msg": "x"}]) == "host: expected str"


def test_the_metrics_token_guards_metrics_and_the_details_of_health(serve: Serve) -> None:
    _, server = serve()
    assert call(server, "/metrics")[0] == 401
    assert call(server, "/metrics", token="wrong")[0] == 401
    status, text = call(server, "/metrics", token=TOKEN)
    assert status == 200 and "evac_http_requests_total" in str(text)
    assert call(server, "/healthz") == (200, {"ok": True})
    status, health = call(server, "/healthz", token=TOKEN)
    assert status == 200 and isinstance(health, dict) and "hosts" in health


def test_metrics_labels_are_route_templates_never_paths_or_queries(serve: Serve, service: Service) -> None:
    web, server = serve()
    for i in range(50):
        call(server, f"/nosuch/{i}?token=leak-{i}")
        call(server, f"/healthz?token=leak-{i}")
        call(server, f"/hooks/evacuate?token=leak-{i}", b"{}")
    text = str(call(server, "/metrics", token=TOKEN)[1])
    assert "leak-" not in text and "/nosuch" not in text
    assert 'route="unmatched"' in text and 'route="/healthz"' in text
    assert 'route="/hooks/evacuate"' in text  # a route an included router added is named too
    scope: Scope = {"type": "http", "path": "/echo", "root_path": "", "method": "PUT", "headers": []}
    assert route_template(web.router.routes, scope) == "/echo"


def test_refused_requests_are_counted_by_route_and_status(serve: Serve, service: Service) -> None:
    _, server = serve(max_body_bytes=10)
    for _ in range(3):
        assert call(server, "/probe/batch", b"x" * 11)[0] == 413
    refused = service.metrics.http_refused.labels("/probe/batch", "413")
    poll_until(lambda: refused._value.get() == 3, 5, "3 refusals counted")  # counted just after the answer


def test_a_mounted_asgi_app_answers_its_exact_path(serve: Serve) -> None:
    _, server = serve()
    assert call(server, "/echo", b'{"hi": 1}') == (200, {"hi": 1})
    assert call(server, "/echo/more", b"{}")[0] == 404


def exchange_until_closed(server: WebServer, parts: list[bytes], every: float) -> tuple[bytes, float]:
    """Send ``parts`` one by one, ``every`` seconds apart, until the server closes; what it
    answered and how long after connecting it closed."""
    began = time.monotonic()
    pause = threading.Event()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for part in parts:
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            pause.wait(every)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out, time.monotonic() - began


def test_headers_dripped_a_byte_at_a_time_are_cut_off_at_the_header_deadline(serve: Serve) -> None:
    _, server = serve(header_deadline=0.5, keep_alive=5)
    drip = [bytes([c]) for c in b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 100]
    out, seconds = exchange_until_closed(server, drip, every=0.05)
    assert out == b"" and 0.4 < seconds < 2.5  # a timer that restarted on every byte would wait for the drip


def test_the_header_deadline_restarts_after_each_answer_not_on_each_byte(serve: Serve) -> None:
    _, server = serve(header_deadline=0.5, keep_alive=5)
    first = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    drip = [first] + [bytes([c]) for c in b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 100]
    out, seconds = exchange_until_closed(server, drip, every=0.05)
    assert out.count(b"HTTP/1.1 200") == 1 and seconds < 2.5


def test_a_body_not_received_by_the_body_deadline_gets_408_and_a_closed_connection(serve: Serve) -> None:
    _, server = serve(body_deadline=0.5)
    head = b"POST /probe/batch HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
    out, seconds = exchange_until_closed(server, [head] + [b" "] * 60, every=0.05)
    assert out.startswith(b"HTTP/1.1 408") and b"connection: close" in out.lower() and seconds < 2.5


def test_healthz_answers_while_the_application_is_full_and_others_get_503(serve: Serve) -> None:
    _, server = serve(max_concurrency=1, queue_deadline=0.3)
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(call, server, "/probe/block")
        assert serve.entered.wait(10)  # type: ignore[attr-defined]
        assert call(server, "/healthz") == (200, {"ok": True})
        assert call(server, "/metrics", token=TOKEN)[0] == 200
        status, why = error(call(server, "/probe/block"))
        assert status == 503 and why.startswith("busy")
        serve.gate.set()  # type: ignore[attr-defined]
        assert blocked.result(10) == (200, {"released": True})


def test_port_zero_binds_a_free_port_and_a_port_in_use_is_an_error_naming_it(serve: Serve) -> None:
    web, server = serve()
    assert server.port > 0
    with pytest.raises(EvacError, match=f"listen on 127.0.0.1:{server.port}: "):
        WebServer(web, "127.0.0.1", server.port)


def test_stopping_closes_a_request_whose_body_is_still_arriving_without_waiting_out_the_grace(serve: Serve) -> None:
    _, server = serve(body_deadline=30, shutdown_grace=5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /probe/batch HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        assert call(server, "/healthz")[0] == 200  # the request above is in (one loop, in order)
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 3 and s.recv(65536) == b""
