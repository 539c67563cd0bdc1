"""Drain speed: evac's drain vs the sequential `virsh migrate` loop vs the best raw parallel
libvirt-python drain, in one run, unshaped and with the host's link capped by tc. evac
runs twice: on a SQLite journal and on the lab's etcd (the same drain, in this process).

    .venv/bin/python -m bench.drain [--guests 8] [--mbit 400] [--rounds 3]

Targets: at least 2x faster than the loop; within 1.1x of the raw parallel drain (on
SQLite and on etcd unshaped); within 1.2x of the link floor (bytes moved / rate) when shaped.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.labkit import Replicas, app, bench_lab, boot, destroy_all, etcd_app, gather, raw_parallel, shape, virsh_loop
from bench.report import publish
from evac.app import App
from evac.lab.guests import GuestSpec
from evac.runbook import bind_params
from evac.states import HostMode

PARALLEL = 4


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


def evac_etcd_drain(a: App) -> float:
    """The same drain with the journal on the lab's etcd (no replicas: this process runs it)."""
    seconds, _ = evac_drain(a)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--guests", type=int, default=8)
    parser.add_argument("--mbit", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lab = bench_lab()
    Replicas(lab).stop_all()  # the etcd drain runs in this process
    etcd = etcd_app(lab)
    names = [f"drain{i}" for i in range(args.guests)]
    destroy_all(lab, names)
    boot(lab, "host1", [GuestSpec(name=n) for n in names])
    moves = [(n, "host1", "host2" if i % 2 else "host3") for i, n in enumerate(names)]
    rows: list[tuple[Any, ...]] = []
    data: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mbit in (None, args.mbit):
            shape(lab, "host1", mbit)
            link = f"{mbit} Mbit/s" if mbit else "unshaped"
            for r in range(args.rounds):
                loop = virsh_loop(lab, moves)
                gather(lab, names, "host1")
                raw = raw_parallel(lab, moves, PARALLEL)
                gather(lab, names, "host1")
                ours, moved = evac_drain(app(lab, Path(tmp) / f"j{mbit}-{r}.db"))
                gather(lab, names, "host1")
                on_etcd = evac_etcd_drain(etcd)
                gather(lab, names, "host1")
                floor = moved / (mbit * 1e6 / 8) if mbit else None
                print(
                    f"{link} round {r + 1}: loop {loop:.2f} s, raw {raw:.2f} s, evac {ours:.2f} s,"
                    f" evac on etcd {on_etcd:.2f} s",
                    flush=True,
                )
                rows.append(
                    (
                        link,
                        r + 1,
                        loop,
                        raw,
                        ours,
                        on_etcd,
                        loop / ours,
                        ours / raw,
                        on_etcd / raw,
                        f"{moved / 2**20:.0f} MiB",
                        f"{ours / floor:.2f}" if floor else "-",
                    )
                )
                data[f"{link} round {r + 1}"] = {
                    "virsh_loop": loop,
                    "raw_parallel": raw,
                    "evac": ours,
                    "evac_etcd": on_etcd,
                    "bytes": moved,
                    "floor_s": floor,
                }
            if args.rounds > 1:
                runs = [v for k, v in data.items() if k.startswith(link)]
                med = {
                    k: statistics.median(r[k] for r in runs)
                    for k in ("virsh_loop", "raw_parallel", "evac", "evac_etcd", "bytes")
                }
                floor = med["bytes"] / (mbit * 1e6 / 8) if mbit else None
                rows.append(
                    (
                        link,
                        "median",
                        med["virsh_loop"],
                        med["raw_parallel"],
                        med["evac"],
                        med["evac_etcd"],
                        med["virsh_loop"] / med["evac"],
                        med["evac"] / med["raw_parallel"],
                        med["evac_etcd"] / med["raw_parallel"],
                        f"{med['bytes'] / 2**20:.0f} MiB",
                        f"{med['evac'] / floor:.2f}" if floor else "-",
                    )
                )
        shape(lab, "host1", None)
    etcd.close()
    destroy_all(lab, names)
    publish(
        "drain",
        f"drain {args.guests} idle 128 MiB guests off host1 (parallel {PARALLEL})",
        (
            "link",
            "round",
            "virsh loop s",
            "raw parallel s",
            "evac s",
            "evac etcd s",
            "loop/evac (>=2)",
            "evac/raw (<=1.1)",
            "evac-etcd/raw (<=1.1)",
            "moved",
            "evac/floor (<=1.2)",
        ),
        rows,
        {"runs": data},
    )


if __name__ == "__main__":
    main()
