"""Liveness that scales: the controller's CPU per watched host, and how fast it sees a host
die, with ``evac agent`` on every host and without, side by side in one run.

The controller is a :class:`evac.monitor.Monitor` in a process of its own (this module
with ``--controller``), on the lab's config (etcd journal; with agents, its ``agent:``
section, so it follows their leases). Its CPU is its utime + stime from /proc over a
fixed window, hosts up and no guests. Detection is from the fault (the lab's power
switch, or a cut of the host's link) to the controller's ``host.down`` event.

    .venv/bin/python -m bench.monitor [--hosts 8 30] [--window 30] [--runs 3]

Targets: with agents, at most 0.05 % of a core per host, and each fault detected no
slower than without. The lab is its own (/tmp/evac-bench-monitor, 198.18.11.0/24) and is
torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bench.report import publish
from evac import hookimpl
from evac.app import make_app
from evac.events import Event
from evac.evidence import MonitorSettings
from evac.lab import Lab
from evac.lab.layout import LabError
from evac.monitor import Monitor

ROOT = "/tmp/evac-bench-monitor"
PREFIX = "evm"
NET = "198.18.11"
TARGET_PER_HOST = 0.05  # % of one core, with agents
WARMUP = 10.0  # s after the controller sees every host, before the window: hushes settle
SETTLE = 5.0  # s after a host is seen up again, before the next fault
FAULTS = ("power-off", "cut")
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the measured process


class Printer:
    """The controller's events about hosts, one JSON line each on stdout, wall-clock stamped."""

    @hookimpl
    def evac_event(self, event: Event) -> None:
        if event.kind.startswith("host."):
            print(json.dumps({"kind": str(event.kind), "host": event.item, "t": time.time()}), flush=True)


def controller(config: Path) -> None:
    """Watch the lab's hosts until SIGTERM; fail nothing over (``host.down`` is what is timed)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = make_app(config)
    app.pm.register(Printer())
    monitor = Monitor(app, lambda host, reason: None, MonitorSettings())
    monitor.start()
    monitor.started.wait(120)
    print(json.dumps({"kind": "ready", "agents": app.agents is not None, "t": time.time()}), flush=True)
    stop.wait()
    monitor.stop()
    app.close()


class Controller:
    """The controller process, its events as they come, and its CPU time."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.monitor", "--controller", str(config)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=Path(__file__).parents[1],
        )
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def wait(self, kind: str, host: str = "", after: float = 0.0, timeout: float = 120) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next(
                (e for e in self.events if e["kind"] == kind and e.get("host", "") == host and e["t"] >= after), None
            )

        with self.cond:
            self.cond.wait_for(lambda: found() is not None or self.proc.poll() is not None, timeout)
            hit = found()
        if hit is None:
            why = "it exited" if self.proc.poll() is not None else f"nothing within {timeout:.0f} s"
            raise RuntimeError(f"controller: no {kind} {host}: {why}; its last events: {self.events[-6:]}")
        return hit

    def cpu(self) -> float:
        """Seconds of CPU the controller used so far (user + system, all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------- the lab


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def logged_since(lab: Lab, host: str, event: str, t0: float) -> bool:
    """Whether the host's watchdog logged ``event`` (armed, fired) since ``t0``."""
    return any(e.get("host") == host and e.get("event") == event and e.get("ts", 0) >= t0 for e in lab.watchdog_log())


def start_agent(lab: Lab, name: str) -> None:
    """``lab.start_agent``, past its race: it may look for the agent before the reaper
    forked it, and call it exited. Then it is waited for here: running, watchdog armed."""
    t0 = time.time()
    try:
        lab.start_agent(name)
    except LabError:
        until(
            lambda: bool(lab.agent_pids(name)) and logged_since(lab, name, "armed", t0),
            30,
            f"evac agent on {name} armed its watchdog",
        )


def fault(lab: Lab, ctrl: Controller, victim: str, kind: str, agents: bool) -> float:
    """One fault of ``victim``, timed to the controller's ``host.down``; then the host is
    brought back (powered on, its agent running) and seen up again."""
    t0 = time.time()
    try:
        (lab.kill_host if kind == "power-off" else lab.cut)(victim)
        detect = float(ctrl.wait("host.down", victim, after=t0)["t"]) - t0
        if agents:
            # A killed agent does not disarm, and a cut one stops feeding: either way its
            # watchdog powers the host off. Wait for it, or it would kill the host restarted.
            until(lambda: logged_since(lab, victim, "fired", t0), 60, f"{victim}'s watchdog fired")
    finally:
        lab.heal(victim)
    back = time.time()
    if lab.power_state(victim) == "off":
        lab.start_host(victim)
    if agents:
        start_agent(lab, victim)
    ctrl.wait("host.up", victim, after=back)
    time.sleep(SETTLE)  # hushed again, as hosts are in the steady state the next fault is timed in
    return detect


def measure(lab: Lab, hosts: int, agents: bool, window: float, runs: int) -> dict[str, Any]:
    label = f"{hosts} hosts, {'agents' if agents else 'no agents'}"
    if agents:
        started = time.monotonic()
        for name in lab.host_names():
            start_agent(lab, name)
        print(f"  [{label}] {hosts} agents armed their watchdogs in {time.monotonic() - started:.0f} s", flush=True)
    else:
        lab.remove_agents()
    config = lab.serve_config("host1")  # with the agent: section once the lab has agents
    ctrl = Controller(config, lab.root / f"controller-{hosts}-{'agents' if agents else 'probes'}.log")
    try:
        ready = ctrl.wait("ready")
        if bool(ready.get("agents")) != agents:
            raise RuntimeError(f"controller follows agents: {ready.get('agents')}, expected {agents}")
        time.sleep(WARMUP)
        before, t0 = ctrl.cpu(), time.monotonic()
        time.sleep(window)
        used, took = ctrl.cpu() - before, time.monotonic() - t0
        core = 100 * used / took
        print(f"  [{label}] controller {core:.3f} % of a core, {core / hosts:.4f} % per host", flush=True)
        detect: dict[str, list[float]] = {kind: [] for kind in FAULTS}
        victim = lab.host_names()[-1]  # no etcd member: the cluster keeps all three
        for run in range(runs):
            for kind in FAULTS:
                seconds = fault(lab, ctrl, victim, kind, agents)
                detect[kind].append(seconds)
                print(f"  [{label}] {kind} of {victim} run {run + 1}: detected in {seconds:.2f} s", flush=True)
    finally:
        ctrl.stop()
    return {"hosts": hosts, "agents": agents, "core_percent": core, "window": took, "detect": detect}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, nargs="+", default=[8, 30])
    parser.add_argument("--window", type=float, default=30.0, help="seconds of controller CPU measured")
    parser.add_argument("--runs", type=int, default=3, help="faults of each kind per row")
    parser.add_argument("--controller", type=Path, help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args()
    if args.controller is not None:
        controller(args.controller)
        return
    lab = Lab(ROOT, prefix=PREFIX, net=NET)
    results: list[dict[str, Any]] = []
    try:
        for hosts in args.hosts:
            print(f"[{hosts} hosts] lab up...", flush=True)
            took = lab.up(hosts=hosts, etcd=True)
            print(f"[{hosts} hosts] lab up in {took:.0f} s", flush=True)
            for agents in (False, True):
                results.append(measure(lab, hosts, agents, args.window, args.runs))
            lab.remove_agents()
    finally:
        print("lab down...", flush=True)
        lab.down()
    rows: list[tuple[Any, ...]] = []
    for r in results:
        per_host = r["core_percent"] / r["hosts"]
        rows.append(
            (
                r["hosts"],
                "yes" if r["agents"] else "no",
                round(r["core_percent"], 3),
                round(per_host, 4),
                ("ok" if per_host <= TARGET_PER_HOST else "MISSED") if r["agents"] else "-",
                *(statistics.median(r["detect"][kind]) for kind in FAULTS),
            )
        )
    marginal = {}
    for agents in (False, True):
        points = sorted((r["hosts"], r["core_percent"]) for r in results if r["agents"] == agents)
        if len(points) >= 2 and points[-1][0] != points[0][0]:
            marginal["agents" if agents else "no agents"] = (points[-1][1] - points[0][1]) / (
                points[-1][0] - points[0][0]
            )
    publish(
        "monitor",
        f"Controller CPU per watched host (% of one core, {args.window:.0f} s window, no guests) and detection (s)",
        ("hosts", "agents", "controller %", "per host %", f"<= {TARGET_PER_HOST} %", "power-off s", "cut s"),
        rows,
        {"runs": args.runs, "results": results, "marginal_percent_per_host": marginal},
    )
    for label, slope in marginal.items():
        print(f"each host added beyond {min(args.hosts)}: {slope:.4f} % of a core ({label})")


if __name__ == "__main__":
    main()
