"""Drain speed: evac's drain vs the sequential `virsh migrate` loop vs the best raw parallel
libvirt-python drain, in one run, unshaped and with the host's link capped by tc. evac
runs twice: on a SQLite journal and on the lab's etcd (the same drain, in this process).
The lab's client pings every guest every 10 ms throughout, and each method's window gives
the longest time a guest went unanswered (the worst guest, and the median guest).

    .venv/bin/python -m bench.drain [--guests 8] [--mbit 400] [--rounds 5]

Targets: at least 2x faster than the loop; evac (SQLite) within 1.05x of the raw parallel
drain unshaped (median), within 1.1x on etcd; within 1.1x of the link floor (bytes moved /
rate) when shaped; no idle guest unanswered for more than 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.labkit import Replicas, app, bench_lab, boot, destroy_all, etcd_app, gather, raw_parallel, shape, virsh_loop
from bench.report import publish
from evac.app import App
from evac.lab.guests import GuestSpec
from evac.lab.probe import Echoes
from evac.runbook import bind_params
from evac.states import HostMode

PARALLEL = 4
PROBE_EVERY = 0.01  # s between echoes to each guest


def evac_drain(a: App) -> tuple[float, int]:
    book = a.runbook("maintenance")
    params = bind_params(
        book, {"host": "host1", "concurrency": PARALLEL, "max_out": PARALLEL, "max_in": PARALLEL}, a.host_names()
    )
    start = time.monotonic()
    result = a.engine.execute(book, params, "host1")
    seconds = time.monotonic() - start
    assert result.state == "succeeded", result.error
    a.journal.set_host_state("host1", HostMode.ENABLED, "", "bench")
    moved = sum(int(r.get("bytes") or 0) for r in result.outputs["report"]["rows"])
    return seconds, moved


def timed(windows: dict[str, tuple[float, float]], key: str, run: Callable[[], float]) -> float:
    """Run one method, keeping its window so the probe's echoes can be read for it later."""
    start = time.monotonic()
    seconds = run()
    windows[key] = (start, time.monotonic())
    return seconds


def gaps(echoes: dict[str, Echoes], window: tuple[float, float]) -> tuple[float, float]:
    """The longest time unanswered in a window: (worst guest, median guest)."""
    longest = [e.between(*window).longest_gap for e in echoes.values()]
    return max(longest), statistics.median(longest)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--guests", type=int, default=8)
    parser.add_argument("--mbit", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lab = bench_lab()
    Replicas(lab).stop_all()  # the etcd drain runs in this process
    etcd = etcd_app(lab)
    names = [f"drain{i}" for i in range(args.guests)]
    destroy_all(lab, names)
    boot(lab, "host1", [GuestSpec(name=n) for n in names])
    moves = [(n, "host1", "host2" if i % 2 else "host3") for i, n in enumerate(names)]
    runs: dict[str, dict[str, Any]] = {}
    windows: dict[str, tuple[float, float]] = {}
    methods = ("virsh_loop", "raw_parallel", "evac", "evac_etcd")
    with tempfile.TemporaryDirectory() as tmp, lab.probe(names, PROBE_EVERY) as probe:
        for mbit in (None, args.mbit):
            shape(lab, "host1", mbit)
            link = f"{mbit} Mbit/s" if mbit else "unshaped"
            for r in range(args.rounds):
                key = f"{link} round {r + 1}"
                moved = 0

                def ours(a: App) -> float:
                    nonlocal moved
                    seconds, moved = evac_drain(a)
                    return seconds

                journal = Path(tmp) / f"j{mbit}-{r}.db"
                runners: dict[str, Callable[[], float]] = {
                    "virsh_loop": lambda: virsh_loop(lab, moves),
                    "raw_parallel": lambda: raw_parallel(lab, moves, PARALLEL),
                    "evac": lambda: ours(app(lab, journal)),  # noqa: B023 (run at once, in this round)
                    "evac_etcd": lambda: evac_drain(etcd)[0],
                }
                seconds = {}
                for method, runner in runners.items():
                    seconds[method] = timed(windows, f"{key}/{method}", runner)
                    gather(lab, names, "host1")
                runs[key] = {**seconds, "bytes": moved, "floor_s": moved / (mbit * 1e6 / 8) if mbit else None}
                print(
                    f"{key}: "
                    + ", ".join(f"{m} {seconds[m]:.2f} s" for m in methods)
                    + f"; moved {moved / 2**20:.0f} MiB",
                    flush=True,
                )
        shape(lab, "host1", None)
        echoes = probe.stop()
    etcd.close()
    destroy_all(lab, names)
    rows: list[tuple[Any, ...]] = []
    for key, run in runs.items():
        for method in ("raw_parallel", "evac"):
            run[f"gap_{method}"] = gaps(echoes, windows[f"{key}/{method}"])
    for mbit in (None, args.mbit):
        link = f"{mbit} Mbit/s" if mbit else "unshaped"
        mine = [run for key, run in runs.items() if key.startswith(link + " ")]
        med = {k: statistics.median(run[k] for run in mine) for k in (*methods, "bytes")}
        floor = med["bytes"] / (mbit * 1e6 / 8) if mbit else None
        ratios = [run["evac"] / run["raw_parallel"] for run in mine]
        rows.append(
            (
                link,
                len(mine),
                med["virsh_loop"],
                med["raw_parallel"],
                med["evac"],
                med["evac_etcd"],
                verdict(med["virsh_loop"] / med["evac"], ">=", 2),
                verdict(med["evac"] / med["raw_parallel"], "<=", 1.05 if mbit is None else 1.1)
                + f" ({min(ratios):.2f}-{max(ratios):.2f})",
                verdict(med["evac_etcd"] / med["raw_parallel"], "<=", 1.1),
                verdict(med["evac"] / floor, "<=", 1.1) if floor else "-",
                worst_and_median(mine, "gap_raw_parallel"),
                verdict(max(run["gap_evac"][0] for run in mine), "<=", 1.0)
                + f" / {statistics.median(run['gap_evac'][1] for run in mine):.2f}",
                f"{med['bytes'] / 2**20:.0f} MiB",
            )
        )
    publish(
        "drain",
        f"drain {args.guests} idle 128 MiB guests off host1 (parallel {PARALLEL}), medians of {args.rounds} rounds",
        (
            "link",
            "rounds",
            "virsh loop s",
            "raw parallel s",
            "evac s",
            "evac etcd s",
            "loop/evac (>=2)",
            "evac/raw (range)",
            "evac-etcd/raw (<=1.1)",
            "evac/floor (<=1.1)",
            "raw: longest gap s, worst / median guest",
            "evac: longest gap s (<=1), worst / median guest",
            "moved",
        ),
        rows,
        {"runs": runs, "probe_interval_s": PROBE_EVERY},
    )


def worst_and_median(runs: list[dict[str, Any]], key: str) -> str:
    return f"{max(run[key][0] for run in runs):.2f} / {statistics.median(run[key][1] for run in runs):.2f}"


def verdict(value: float, sense: str, target: float) -> str:
    met = value >= target if sense == ">=" else value <= target
    return f"{value:.2f} — {'met' if met else 'missed'}"


if __name__ == "__main__":
    main()
