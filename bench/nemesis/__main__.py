"""``python -m bench.nemesis [--minutes N] [--seed S] [--runs K] [--guests G] [--agents]``

Prints the seed first: ``--seed`` replays a run. Several runs (``--runs``) take the seeds
S, S+1, ... on the same lab and guests. The table is printed, the JSON goes to
``bench/results/nemesis.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from bench.labkit import bench_lab
from bench.report import OUT, machine

from .report import as_json, text
from .run import run, say, stage, tidy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nemesis")
    parser.add_argument("--minutes", type=float, default=5.0, help="faults per run (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a random seed)")
    parser.add_argument("--runs", type=int, default=1, help="runs, seeds S, S+1, ... (default 1)")
    parser.add_argument("--guests", type=int, default=6, help="guests, spread over the hosts (default 6)")
    parser.add_argument("--agents", action="store_true", help="evac agent on every host (adds QEMU, agent faults)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    say(f"seed {seed}")
    lab = bench_lab()
    hosts = lab.host_names()
    guests: dict[str, list[str]] = {h: [] for h in hosts}
    for i in range(args.guests):
        guests[hosts[i % len(hosts)]].append(f"nem-{i}")
    st = stage(lab, guests, agents=args.agents)
    outcomes = []
    try:
        for k in range(args.runs):
            outcome = run(st, args.minutes * 60, seed + k)
            say(text(outcome))
            outcomes.append(outcome)
    finally:
        tidy(st)
    OUT.mkdir(exist_ok=True)
    data = {
        "bench": "nemesis",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "lab": {"hosts": hosts, "members": st.replicas.hosts, "guests": st.guests, "agents": args.agents},
        "runs": [as_json(o) for o in outcomes],
        "violations": sum(len(o.violations) for o in outcomes),
    }
    (OUT / "nemesis.json").write_text(json.dumps(data, indent=2, default=str))
    say(f"seed {seed}: {data['violations']} invariant violations over {len(outcomes)} run(s)")
    return 1 if data["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
