"""A lab of its own for benchmarks (198.18.3.0/24), and raw libvirt helpers to compare against."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt

from evac.app import App
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
    lab = (
        Lab.open("/tmp/evac-bench")
        if Path("/tmp/evac-bench/lab.json").exists()
        else Lab("/tmp/evac-bench", "evb", "198.18.3")
    )
    build_assets(lab)
    lab.up(3)
    return lab


def app(lab: Lab, journal: Path) -> App:
    return App(inventory_path=lab.inventory_file, journal_path=journal)


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
