"""Failover time: power off (or partition) a host running 4 guests; time from the fault to
every guest started elsewhere and to every guest's console ready, split into detect /
fence / restart, for evac (monitor + host-failure runbook) and for the raw by-hand
failover (keepalive + close callback, fence, define + start elsewhere), in one run.

    .venv/bin/python -m bench.failover [--runs 3] [--guests 4]

Targets: evac adds 1.5 s or less to the raw figure; a partitioned host's guests run
elsewhere within 10 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt

from bench.labkit import app, bench_lab, boot, destroy_all
from bench.report import publish
from evac import hookimpl
from evac.events import Event
from evac.evidence import MonitorSettings
from evac.hypervisor import start_event_loop
from evac.lab import Lab
from evac.lab.guests import GuestSpec, console_path
from evac.monitor import Monitor
from evac.snapshots import Snapshotter

DEAD = "host2"
SPARES = ("host1", "host3")


class Clock:
    def __init__(self) -> None:
        self.t0 = 0.0
        self.marks: dict[str, float] = {}
        self.cond = threading.Condition()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def mark(self, name: str) -> None:
        with self.cond:
            self.marks.setdefault(name, time.monotonic() - self.t0)
            self.cond.notify_all()

    def wait(self, name: str, timeout: float = 120) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.marks, timeout):
                raise TimeoutError(name)
            return self.marks[name]


class Marks:
    def __init__(self, clock: Clock, guests: int) -> None:
        self.clock, self.guests, self.started = clock, guests, 0

    @hookimpl
    def evac_event(self, event: Event) -> None:
        if event.kind == "host.down" and event.item == DEAD:
            self.clock.mark("detect")
        elif event.kind == "step.finished" and event.step == "fence":
            self.clock.mark("fence")
        elif event.kind == "item.finished" and event.step == "restart":
            self.started += 1
            if self.started == self.guests:
                self.clock.mark("started")


def console_ready(lab: Lab, names: list[str], offsets: dict[str, int], clock: Clock) -> None:
    def one(name: str) -> None:
        path = console_path(lab, name)
        while True:
            with open(path, "rb") as f:
                f.seek(offsets[name])
                if b"LAB-READY" in f.read():
                    return
            time.sleep(0.02)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(one, names))
    clock.mark("ready")


def fault(lab: Lab, mode: str) -> None:
    (lab.kill_host if mode == "kill" else lab.cut)(DEAD)


def run_evac(lab: Lab, names: list[str], mode: str, journal: Path) -> dict[str, float]:
    a = app(lab, journal)
    clock = Clock()
    a.pm.register(Marks(clock, len(names)))
    monitor = Monitor(a, a.jobs.host_down, MonitorSettings())
    snapshots = Snapshotter(a)
    snapshots.start()
    monitor.start()
    monitor.started.wait(30)
    deadline = time.monotonic() + 30
    while set(names) - set(a.journal.definitions(DEAD)) and time.monotonic() < deadline:
        time.sleep(0.1)
    offsets = {n: console_path(lab, n).stat().st_size for n in names}
    clock.start()
    fault(lab, mode)
    try:
        clock.wait("started")
        console_ready(lab, names, offsets, clock)
    finally:
        monitor.stop()
        snapshots.stop()
    return clock.marks


def run_raw(lab: Lab, names: list[str], mode: str) -> dict[str, float]:
    """By hand: a watcher with keepalive and a close callback, then fence and restart."""
    start_event_loop()
    conn = libvirt.open(lab.host(DEAD).uri)
    conn.setKeepAlive(1, 3)
    xmls = {n: conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE) for n in names}
    clock = Clock()
    conn.registerCloseCallback(lambda *_: clock.mark("detect"), None)
    offsets = {n: console_path(lab, n).stat().st_size for n in names}
    clock.start()
    fault(lab, mode)
    clock.wait("detect")
    if mode == "cut":
        lab.kill_host(DEAD)  # the fence: the out-of-band switch
    clock.mark("fence")

    def restart(item: tuple[int, str]) -> None:
        index, name = item
        target = libvirt.open(lab.host(SPARES[index % 2]).uri)
        target.defineXML(xmls[name]).create()
        target.close()

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(restart, enumerate(names)))
    clock.mark("started")
    console_ready(lab, names, offsets, clock)
    try:
        conn.close()
    except libvirt.libvirtError:
        pass
    return clock.marks


def reset(lab: Lab, names: list[str]) -> None:
    lab.heal(DEAD)
    if lab.power_state(DEAD) == "off":
        lab.start_host(DEAD)
    destroy_all(lab, names)
    boot(lab, DEAD, [GuestSpec(name=n) for n in names])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guests", type=int, default=4)
    args = parser.parse_args()
    lab = bench_lab()
    names = [f"fo{i}" for i in range(args.guests)]
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("kill", "cut"):
            for r in range(args.runs):
                for method in ("raw", "evac"):
                    reset(lab, names)
                    marks = (
                        run_raw(lab, names, mode)
                        if method == "raw"
                        else run_evac(lab, names, mode, Path(tmp) / f"{mode}{r}.db")
                    )
                    results.setdefault(f"{mode}/{method}", []).append(marks)
        reset(lab, names)
    destroy_all(lab, names)
    rows: list[tuple[Any, ...]] = []
    for key, runs in results.items():
        mode, method = key.split("/")

        def med(mark: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[mark] for r in runs)

        worst = max(r["started"] for r in runs)
        rows.append(
            (
                mode,
                method,
                len(runs),
                med("detect"),
                med("fence") - med("detect"),
                med("started") - med("fence"),
                med("started"),
                worst,
                med("ready"),
            )
        )
    for mode in ("kill", "cut"):
        raw = statistics.median(r["started"] for r in results[f"{mode}/raw"])
        ours = statistics.median(r["started"] for r in results[f"{mode}/evac"])
        rows.append(
            (mode, "evac - raw", "", "", "", "", ours - raw, "", "<= 1.5 s" if ours - raw <= 1.5 else "MISSED 1.5 s")
        )
    publish(
        "failover",
        f"{args.guests} guests on a failed host: seconds from the fault (median of {args.runs})",
        ("fault", "method", "runs", "detect", "fence", "restart", "started", "worst started", "consoles ready"),
        rows,
        {"runs": results},
    )


if __name__ == "__main__":
    main()
