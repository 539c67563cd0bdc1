"""HTTP load on a real ``evac serve`` over loopback (no lab: a throwaway config, monitor off).

    .venv/bin/python -m bench.http [--clients 50] [--requests 40] [--slow 30] [--flood 5000]

Three phases, each bounded in requests and time:
- ``concurrent``: ``--clients`` keep-alive clients, ``--requests`` GET /healthz each;
- ``slow clients``: ``--slow`` connections that never finish their headers or body, while
  /healthz is probed; they must be closed at the header/body deadline (10 s);
- ``flood``: ``--flood`` unauthenticated POSTs to /hooks/alertmanager, each with its own
  query string, from ``--clients`` threads, while /healthz is probed every 10 ms.

Targets: 0 resets; /healthz p99 under 100 ms during the flood; the server's RSS flat;
metric series bounded (the query strings make none).
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import publish
from tests.unit.test_http_serve import LoopbackServe


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    resets: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, status: int) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] += 1


COLUMNS = ["phase", "requests", "s", "req/s", "p50 ms", "p99 ms", "resets", "errors", "statuses"]
COLUMNS += ["healthz p99 ms", "RSS MiB"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def one(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, tally: Tally) -> bool:
    """One request on a kept-alive connection; False when the connection must be remade."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    began = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        tally.add(time.perf_counter() - began, response.status)
        return not response.will_close
    except ConnectionResetError:
        with tally.lock:
            tally.resets += 1
    except (OSError, http.client.HTTPException):
        with tally.lock:
            tally.errors += 1
    return False


def clients(port: int, count: int, per_client: int, make: Callable[[int], tuple[str, str, bytes | None]]) -> Tally:
    tally = Tally()
    done = [0]

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(per_client):
            method, path, body = make(c * per_client + i)
            if not one(conn, method, path, body, tally):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with tally.lock:
                done[0] += 1
                if done[0] % max(1, count * per_client // 10) == 0:
                    print(f"  {done[0]}/{count * per_client} requests", flush=True)
        conn.close()

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(client, range(count)))
    return tally


def probe_loop(port: int, stop: Any, out: Any, every: float) -> None:
    tally = Tally()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.wait(every):
        if not one(conn, "GET", "/healthz", None, tally):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()
    out.send((tally.latencies, dict(tally.statuses), tally.resets, tally.errors))


class Probe:
    """/healthz every ``every`` s from a process of its own (the load's client threads must
    not slow the probe down: what it measures is the server) until :meth:`stop`."""

    def __init__(self, port: int, every: float = 0.01) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._out, into = context.Pipe(duplex=False)
        self._process = context.Process(target=probe_loop, args=(port, self._stop, into, every), daemon=True)
        self._process.start()

    def stop(self) -> Tally:
        self._stop.set()
        latencies, statuses, resets, errors = self._out.recv()
        self._process.join(10)
        return Tally(latencies, Counter(statuses), resets, errors)


def slow_clients(port: int, count: int) -> tuple[int, float]:
    """``count`` half-sent requests; how many the server closed, and when the last was closed."""
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if i % 2:
            s.sendall(b"POST /hooks/evacuate HTTP/1.1\r\nHost: b\r\nX-Slow: " + str(i).encode())
        else:
            s.sendall(b"POST /hooks/evacuate HTTP/1.1\r\nHost: b\r\nContent-Length: 1000\r\n\r\n{")
        socks.append(s)
    began = time.monotonic()
    closed = 0
    for s in socks:
        try:
            while s.recv(65536):
                pass
            closed += 1
        except OSError:
            pass
        s.close()
    return closed, time.monotonic() - began


def series(served: LoopbackServe) -> int:
    """Series of ``evac_http_requests_total``: one per (route template, method, status)."""
    text = served.get("/metrics")[1].decode()
    return sum(1 for line in text.splitlines() if line.startswith("evac_http_requests_total{"))


def row(phase: str, tally: Tally, seconds: float, rss_kib: int, health: Tally | None = None) -> list[object]:
    n = len(tally.latencies)
    return [
        phase,
        n,
        round(seconds, 2),
        round(n / seconds, 1) if seconds else 0.0,
        round(pct(tally.latencies, 0.5), 2),
        round(pct(tally.latencies, 0.99), 2),
        tally.resets,
        tally.errors,
        " ".join(f"{k}:{v}" for k, v in sorted(tally.statuses.items())),
        round(pct(health.latencies, 0.99), 2) if health else "",
        round(rss_kib / 1024, 1),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--slow", type=int, default=30)
    parser.add_argument("--flood", type=int, default=5000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        served = LoopbackServe(Path(tmp)).start()
        try:
            for _ in range(50):
                served.get("/healthz")
            rss_before = served.rss_kib()
            series_before = series(served)
            print(f"evac serve on port {served.port}, RSS {rss_before / 1024:.1f} MiB", flush=True)

            print(f"concurrent: {args.clients} clients x {args.requests} GET /healthz", flush=True)
            began = time.perf_counter()
            tally = clients(served.port, args.clients, args.requests, lambda i: ("GET", "/healthz", None))
            rows.append(row("concurrent", tally, time.perf_counter() - began, served.rss_kib()))

            print(f"slow clients: {args.slow} half-sent requests, /healthz probed meanwhile", flush=True)
            probe = Probe(served.port)
            closed, slow_seconds = slow_clients(served.port, args.slow)
            health = probe.stop()
            rows.append(row(f"slow x{args.slow} (healthz)", health, slow_seconds, served.rss_kib(), health))
            print(f"  {closed}/{args.slow} slow clients closed by the server after {slow_seconds:.1f} s", flush=True)

            print(f"flood: {args.flood} unauthenticated POST /hooks/alertmanager?n=..., /healthz probed", flush=True)
            probe = Probe(served.port)
            per = max(1, args.flood // args.clients)
            began = time.perf_counter()
            tally = clients(
                served.port, args.clients, per, lambda i: ("POST", f"/hooks/alertmanager?token=x{i}&n={i}", b"{}")
            )
            flood_seconds = time.perf_counter() - began
            health = probe.stop()
            rows.append(row("flood", tally, flood_seconds, served.rss_kib(), health))

            rss_after = served.rss_kib()
            series_after = series(served)
        finally:
            served.stop()
    publish(
        "http",
        f"evac serve over loopback: RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB; "
        f"evac_http_requests series {series_before} -> {series_after}; slow clients closed {closed}/{args.slow} "
        f"in {slow_seconds:.1f} s",
        COLUMNS,
        rows,
        {
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "metric_series_before": series_before,
            "metric_series_after": series_after,
            "slow_closed": closed,
            "slow_seconds": slow_seconds,
            "median_healthz_ms": round(statistics.median(health.latencies) * 1000, 2) if health.latencies else None,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
