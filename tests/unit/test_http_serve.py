"""A real ``evac serve`` over real sockets: framing, desync, slow clients, bounded metrics.

No lab: the inventory names a host that does not exist and the monitor is off, so the
process serves HTTP and nothing else. One process serves the whole module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import http_get, poll_until

ROOT = Path(__file__).parents[2]
TOKEN = "t0ken-for-tests"
HEADER_DEADLINE = 10.0  # evac.web.WebSettings' default


class LoopbackServe:
    """``python -m evac serve`` on 127.0.0.1 with a throwaway config (also ``bench.http``'s)."""

    def __init__(self, tmp: Path, listen: str = "") -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        (tmp / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
        self.config = tmp / "evac.yaml"
        self.config.write_text(
            f"inventory: hosts.yaml\njournal: {tmp}/journal.db\n"
            f"listen: {{address: 127.0.0.1, port: {self.port}{listen}}}\n"
            'webhooks: {token: "env:EVAC_TEST_TOKEN", max_body_kib: 16}\n'
            "monitor: {enabled: false}\nsnapshots: {every: 3600}\n"
        )
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LoopbackServe:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "evac", "serve", "--config", str(self.config)],
                cwd=ROOT,
                env={**os.environ, "EVAC_TEST_TOKEN": TOKEN},
                stdout=log,
                stderr=log,
            )
        poll_until(self.healthy, 30, "evac serve to answer /healthz")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        return http_get(self.port, path, token)

    def exchange(self, raw: bytes, timeout: float = 15) -> bytes:
        """Send ``raw`` on one connection; everything the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(raw)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServe]:
    server = LoopbackServe(tmp_path_factory.mktemp("serve")).start()
    yield server
    server.stop()


def statuses(reply: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]


def request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{length}{headers}\r\n".encode() + body


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
LAST = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("first", "status"),
    [
        (request("POST", "/nosuch", SMUGGLED), 404),
        (request("GET", "/healthz", SMUGGLED), 200),
        (request("POST", "/hooks/evacuate", SMUGGLED + b"x" * 17 * 1024), 413),
        (b"POST /hooks/evacuate HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED, 411),
    ],
    ids=["404", "get-with-body", "413", "411"],
)
def test_an_unread_body_is_never_parsed_as_the_next_request(served: LoopbackServe, first: bytes, status: int) -> None:
    reply = served.exchange(first + LAST)
    assert statuses(reply)[0] == status, reply
    assert b"smuggled" not in reply, reply  # no answer to the request hidden in the body
    assert statuses(reply) in ([status], [status, 200]), reply  # closed, or the next real request answered


def test_content_length_with_chunked_is_refused_and_the_connection_closed(served: LoopbackServe) -> None:
    body = b"0\r\n\r\n" + SMUGGLED
    raw = (
        f"POST /hooks/evacuate HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + body
    reply = served.exchange(raw + LAST)
    assert statuses(reply) == [400], reply
    assert b"Content-Length and Transfer-Encoding" in reply


@pytest.mark.parametrize(
    "length",
    ["²".encode(), b"9" * 5000, b"-1", b"1e3", b"0x10"],
    ids=["superscript", "5000-digits", "neg", "exp", "hex"],
)
def test_a_content_length_that_is_not_a_number_gets_a_400_not_a_500(served: LoopbackServe, length: bytes) -> None:
    reply = served.exchange(b"POST /hooks/evacuate HTTP/1.1\r\nHost: t\r\nContent-Length: " + length + b"\r\n\r\n{}")
    assert statuses(reply) == [400], reply
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"].startswith("bad request:")
    assert served.healthy()


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"host": "\xff\xfe"}', b"\xc3\x28"],
    ids=["nested", "not-utf8", "not-utf8-bare"],
)
@pytest.mark.parametrize("hook", ["/hooks/evacuate", "/hooks/alertmanager"])
def test_hostile_bodies_get_a_4xx_never_a_500(served: LoopbackServe, hook: str, body: bytes) -> None:
    limit = 16 * 1024
    auth = f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nConnection: close\r\n"
    reply = served.exchange(request("POST", hook, body[:limit], auth))
    assert 400 <= statuses(reply)[0] < 500, reply


def test_half_sent_requests_are_closed_at_the_deadline_while_healthz_keeps_answering(served: LoopbackServe) -> None:
    slow: list[socket.socket] = []
    try:
        for i in range(15):  # headers never finished
            s = socket.create_connection(("127.0.0.1", served.port), timeout=HEADER_DEADLINE + 10)
            s.sendall(b"POST /hooks/evacuate HTTP/1.1\r\nHost: t\r\nX-Slow: " + str(i).encode())
            slow.append(s)
        for _ in range(15):  # headers done, body never finished
            s = socket.create_connection(("127.0.0.1", served.port), timeout=HEADER_DEADLINE + 10)
            s.sendall(b"POST /hooks/evacuate HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{")
            slow.append(s)
        began = time.monotonic()
        for _ in range(20):
            t0 = time.monotonic()
            assert served.get("/healthz")[0] == 200
            assert time.monotonic() - t0 < 1.0
        for s in slow:
            reply = b""
            while chunk := s.recv(65536):  # the server closes: recv returns b"" (a timeout fails the test)
                reply += chunk
            assert statuses(reply) in ([], [408]), reply
        assert time.monotonic() - began < HEADER_DEADLINE + 5
    finally:
        for s in slow:
            s.close()


def test_twenty_concurrent_clients_of_twenty_requests_see_no_reset(served: LoopbackServe) -> None:
    def client(_: int) -> list[int]:
        codes = []
        for _ in range(20):
            try:
                codes.append(served.get("/healthz")[0])
            except ConnectionResetError:
                codes.append(-1)
        return codes

    with ThreadPoolExecutor(20) as pool:
        codes = [c for client_codes in pool.map(client, range(20)) for c in client_codes]
    assert codes == [200] * 400


def metric_series(text: bytes, prefix: str) -> list[dict[str, str]]:
    return [
        dict(sample.labels)
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name.startswith(prefix)
    ]


def test_query_strings_make_no_series_and_never_show_on_metrics(served: LoopbackServe) -> None:
    def post(i: int) -> int:
        raw = request("POST", f"/hooks/alertmanager?token=secret-{i}&n={i}", b"{}", "Connection: close\r\n")
        return statuses(served.exchange(raw))[0]

    before = served.get("/metrics")[1]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(2000)))
    assert all(400 <= code < 500 for code in codes)
    after = served.get("/metrics")[1]
    assert b"secret-" not in after
    routes = {labels["route"] for labels in metric_series(after, "evac_http_requests_total")}
    assert routes <= {"/healthz", "/metrics", "/openapi.json", "/hooks/alertmanager", "/hooks/evacuate", "unmatched"}
    assert len(metric_series(after, "evac_http")) - len(metric_series(before, "evac_http")) < 50


def test_the_api_is_described_at_openapi_json(served: LoopbackServe) -> None:
    status, body = served.get("/openapi.json")
    document = json.loads(body)
    assert status == 200 and document["info"]["title"] == "evac" and "/healthz" in document["paths"]


def test_unknown_routes_get_a_json_404_naming_the_route(served: LoopbackServe) -> None:
    status, body = served.get("/nosuch?x=1")
    assert (status, json.loads(body)) == (404, {"error": "no route GET /nosuch"})
