"""A lease's keepalive over TLS: a new connection per request (``Cluster.for_lease``, which
gives the connect and the TLS handshake 0.5 s) against a kept connection, side by side,
on an idle machine and with every core busy.

    .venv/bin/python -m bench.leases [--requests 300] [--load 0,2,4]

A real etcd on 127.0.0.1 with the lab's TLS (client certificates, ECDSA P-256). The
question it answers: does a handshake on a busy controller fit the connect timeout, and
what does the new connection cost over a kept one?
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.report import publish
from evac.errors import EvacError
from evac.etcdclient import LEASE_CONNECT, Cluster, EtcdSettings
from evac.lab.pki import ensure_ca, issue_etcd_member, issue_libvirt_client
from tests.etcdserver import ETCD, free_port

TTL = 3


@contextmanager
def tls_etcd(workdir: Path) -> Iterator[EtcdSettings]:
    """One member serving https with client certificates, as a lab member does."""
    ca = ensure_ca(workdir / "ca")
    issue_etcd_member(ca, workdir / "member", "bench", "127.0.0.1")
    issue_libvirt_client(ca, workdir / "client")
    member = workdir / "member"
    client_url, peer_url = f"https://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    with (workdir / "etcd.log").open("wb") as log:
        process = subprocess.Popen(
            [
                ETCD, "--name=bench", f"--data-dir={workdir / 'data'}",
                f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=bench={peer_url}",
                "--client-cert-auth", f"--trusted-ca-file={member / 'ca.pem'}",
                f"--cert-file={member / 'member.pem'}", f"--key-file={member / 'member-key.pem'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = workdir / "client"
    settings = EtcdSettings(
        endpoints=(client_url,),
        ca=client / "cacert.pem",
        cert=client / "clientcert.pem",
        key=client / "clientkey.pem",
        prefix="/bench/",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                Cluster(settings).revision()
                break
            except EvacError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"etcd did not answer over TLS; log: {workdir / 'etcd.log'}") from None
                time.sleep(0.2)
        yield settings
    finally:
        process.terminate()
        process.wait(10)


def spin(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@contextmanager
def busy(processes: int) -> Iterator[None]:
    """``processes`` busy loops beside the measurement."""
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(5)


def keepalives(cluster: Cluster, lease: int, requests: int) -> tuple[list[float], int]:
    """Each keepalive's wall time (ms), and how many failed."""
    times, failed = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        try:
            cluster.keepalive(lease)
        except EvacError:
            failed += 1
            continue
        times.append((time.perf_counter() - started) * 1000)
    return times, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="keepalives per mode and load")
    parser.add_argument("--load", default="0,2,4", help="busy processes beside the measurement, per round")
    args = parser.parse_args()
    loads = [int(n) for n in args.load.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="evac-bench-leases-") as tmp, tls_etcd(Path(tmp)) as settings:
        kept = Cluster(settings)
        fresh = kept.for_lease(TTL)
        lease = kept.grant(TTL * 100)  # the measurement's own pace must not expire it
        for load in loads:
            with busy(load):
                measured = {}
                for mode, cluster in (("kept connection", kept), ("new connection (for_lease)", fresh)):
                    print(f"  {load} busy: {mode}: {args.requests} keepalives", flush=True)
                    measured[mode] = keepalives(cluster, lease, args.requests)
            base = statistics.median(measured["kept connection"][0])
            for mode, (times, failed) in measured.items():
                ordered = sorted(times)
                p99 = ordered[int(len(ordered) * 0.99) - 1]
                over = sum(1 for t in times if t > LEASE_CONNECT * 1000)
                median = statistics.median(times)
                rows.append((load, mode, median, p99, max(times), over, failed, median / base))
    publish(
        "leases",
        f"Lease keepalives over TLS, {args.requests} per row (ms; busy = spinning processes on the same cores)",
        ("busy", "mode", "p50 ms", "p99 ms", "max ms", f"> {LEASE_CONNECT * 1000:.0f} ms", "failed", "p50 / kept"),
        rows,
        {"requests": args.requests, "connect_timeout_s": LEASE_CONNECT, "ttl_s": TTL},
    )


if __name__ == "__main__":
    main()
