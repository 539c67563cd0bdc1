"""A lab of its own for benchmarks (198.18.3.0/24), and raw libvirt helpers to compare against."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt

from evac.app import App, make_app
from evac.lab import Lab
from evac.lab.guests import GuestSpec, build_assets, create_guest, wait_console

RAW_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_UNSAFE
)


def bench_lab() -> Lab:
    """The bench's lab; ``$EVAC_BENCH_LAB`` (``ROOT,PREFIX,NET``) moves it, so a second
    engineer on the machine can measure without touching the first one's lab."""
    root, prefix, net = (os.environ.get("EVAC_BENCH_LAB") or "/tmp/evac-bench,evb,198.18.3").split(",")
    lab = Lab.open(root) if Path(root, "lab.json").exists() else Lab(root, prefix, net)
    build_assets(lab)
    lab.up(3, etcd=True)  # a member on each host: killing DEAD (host2) kills its member too
    return lab


def app(lab: Lab, journal: Path) -> App:
    return App(inventory_path=lab.inventory_file, journal_path=journal)


# The replicas' settings beside the lab's (etcd journal, lease_ttl 3): the monitor's defaults
# as the in-process SQLite row uses them, snapshots every second, and a 5 s storm window so
# back-to-back runs are not counted as hosts failing together.
REPLICA_SETTINGS: dict[str, Any] = {"snapshots": {"every": 1}, "monitor": {"window": 5}}


def etcd_app(lab: Lab, host: str = "host1") -> App:
    """An app in this process whose journal is the lab's etcd (the replicas' config on ``host``)."""
    return make_app(lab.serve_config(host, **REPLICA_SETTINGS))


def until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)


class Replicas:
    """``evac serve`` on every etcd member's host: start, stop, who leads, make one lead."""

    def __init__(self, lab: Lab, file: str = "evac.yaml", **overrides: Any) -> None:
        self.lab = lab
        self.hosts = lab.etcd_member_names()
        self.configs = {h: lab.serve_config(h, file=file, **{**REPLICA_SETTINGS, **overrides}) for h in self.hosts}

    def health(self, host: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.lab.serve_url(host)}/healthz", timeout=2) as response:
                data = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def running(self) -> list[str]:
        return [h for h in self.hosts if self.lab.serve_pids(h)]

    def start(self, host: str) -> None:
        if not self.lab.serve_pids(host):
            self.lab.serve(host, self.configs[host])
        until(lambda: self.health(host) is not None, 60, f"evac serve on {host} answers")

    def stop(self, host: str) -> None:
        """SIGTERM: the replica resigns the leadership and revokes its lease at once."""
        self.lab.stop_serve(host, signal.SIGTERM)

    def stop_all(self) -> None:
        for host in self.hosts:
            self.stop(host)

    def leads(self, host: str) -> bool:
        health = self.health(host)
        return bool(health and (health.get("cluster") or {}).get("leader"))

    def leader(self) -> str | None:
        leading = [h for h in self.running() if self.leads(h)]
        return leading[0] if len(leading) == 1 else None

    def settled(self, host: str) -> bool:
        """Answers, sees every powered host up, and holds no storm brake."""
        health = self.health(host)
        if not health or health.get("storm_brake"):
            return False
        hosts = health.get("hosts") or {}
        on = [h for h in self.lab.host_names() if self.lab.power_state(h) == "on"]
        return all(hosts.get(h) == "up" for h in on)

    def make_lead(self, host: str, timeout: float = 90) -> None:
        """Every replica running, ``host``'s leading: stop the others, start ``host`` first,
        wait until it leads, then start the rest, and wait until all see every host up."""
        if self.leader() != host or len(self.running()) != len(self.hosts):
            for other in self.hosts:
                if other != host:
                    self.stop(other)
            self.start(host)
            until(lambda: self.leads(host), timeout, f"{host}'s replica leads")
            for other in self.hosts:
                if other != host:
                    self.start(other)
        until(lambda: all(self.settled(h) for h in self.hosts), timeout, "every replica sees every host up")
        if self.leader() != host:
            raise RuntimeError(f"{host} should lead, but {self.leader()} does")


def boot(lab: Lab, host: str, specs: Iterable[GuestSpec]) -> None:
    offsets = {s.name: create_guest(lab, host, s) for s in specs}
    with ThreadPoolExecutor(max_workers=len(offsets) or 1) as pool:
        list(pool.map(lambda n: wait_console(lab, n, after=offsets[n], timeout=600), offsets))


def where(lab: Lab, name: str) -> str | None:
    for h in lab.hosts():
        conn = libvirt.open(h.uri)
        try:
            conn.lookupByName(name)
            return h.name
        except libvirt.libvirtError:
            continue
        finally:
            conn.close()
    return None


def raw_migrate(lab: Lab, name: str, source: str, target: str, params: dict[str, object] | None = None) -> None:
    conn = libvirt.open(lab.host(source).uri)
    try:
        conn.lookupByName(name).migrateToURI3(lab.host(target).uri, dict(params or {}), RAW_FLAGS)
    finally:
        conn.close()


def raw_parallel(lab: Lab, moves: list[tuple[str, str, str]], workers: int = 4) -> float:
    """The best an operator's own script does: threads, one connection each."""
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda m: raw_migrate(lab, *m), moves))
    return time.monotonic() - start


def virsh_loop(lab: Lab, moves: list[tuple[str, str, str]]) -> float:
    """What an operator writes by hand: one `virsh migrate` after the other."""
    start = time.monotonic()
    for name, source, target in moves:
        subprocess.run(
            [
                "virsh",
                "-q",
                "-c",
                lab.host(source).uri,
                "migrate",
                "--live",
                "--p2p",
                "--persistent",
                "--undefinesource",
                "--unsafe",
                name,
                lab.host(target).uri,
            ],
            check=True,
            capture_output=True,
        )
    return time.monotonic() - start


def gather(lab: Lab, names: list[str], home: str) -> None:
    """Bring guests back to ``home`` (not measured)."""
    moves = [(n, h, home) for n in names if (h := where(lab, n)) and h != home]
    raw_parallel(lab, moves)


def shape(lab: Lab, host: str, mbit: int | None) -> None:
    """Cap the host's outgoing link with a token bucket (None removes it)."""
    ns = lab.host(host).netns
    subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root"], capture_output=True)
    if mbit:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                f"{mbit}mbit",
                "burst",
                "1mbit",
                "latency",
                "200ms",
            ],
            check=True,
            capture_output=True,
        )


def destroy_all(lab: Lab, names: Iterable[str]) -> None:
    for h in lab.hosts():
        try:
            conn = libvirt.open(h.uri)
        except libvirt.libvirtError:
            continue
        for name in names:
            try:
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
        conn.close()
