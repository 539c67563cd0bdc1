"""``python -m bench.nemesis [--minutes N] [--seed S] [--runs K] [--guests G] [--no-agents] [--overlap P]``

On a lab of its own (4 hosts, an etcd member on each of the first three, each with an
``evac serve`` replica; ``$EVAC_NEMESIS_LAB`` = ``ROOT,PREFIX,NET`` moves it), with
``evac agent`` on every host unless ``--no-agents``. Prints the seed first: ``--seed``
replays a run. Several runs (``--runs``) take the seeds S, S+1, ... on the same lab and
guests. The tables are printed, the JSON goes to ``bench/results/nemesis.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import OUT, machine
from evac.lab import Lab
from evac.lab.guests import build_assets

from .faults import OVERLAP
from .report import Outcome, as_json, text
from .run import guest_specs, run, say, stage, tidy


def nemesis_lab() -> Lab:
    """The HA tests' lab shape: host4 holds no etcd member, so a second host can fail
    while a member's host is down and the cluster keeps its quorum."""
    root, prefix, net = (os.environ.get("EVAC_NEMESIS_LAB") or "/tmp/evac-nemesis,evn,198.18.5").split(",")
    lab = Lab.open(root) if Path(root, "lab.json").exists() else Lab(root, prefix, net)
    build_assets(lab)
    lab.up(4, etcd=True)
    return lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nemesis")
    parser.add_argument("--minutes", type=float, default=5.0, help="faults per run (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a random seed)")
    parser.add_argument("--runs", type=int, default=1, help="runs, seeds S, S+1, ... (default 1)")
    parser.add_argument("--guests", type=int, default=8, help="guests, spread over the hosts (default 8)")
    parser.add_argument(
        "--no-agents", dest="agents", action="store_false", help="no evac agent (and no QEMU or agent faults)"
    )
    parser.add_argument(
        "--overlap", type=float, default=OVERLAP, help=f"share of rounds with a second fault (default {OVERLAP})"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.overlap <= 1 or args.guests < 1 or args.runs < 1 or args.minutes <= 0:
        parser.error("--overlap is a share (0 to 1); --guests, --runs and --minutes are positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    say(f"seed {seed}")
    lab = nemesis_lab()
    hosts = lab.host_names()
    st = stage(lab, guest_specs(hosts, args.guests), agents=args.agents)
    outcomes: list[Outcome] = []

    def save() -> dict[str, Any]:
        """The JSON so far: written after every run, so a later run's crash keeps it."""
        data: dict[str, Any] = {
            "bench": "nemesis",
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine(),
            "lab": {"hosts": hosts, "members": st.replicas.hosts, "guests": st.guests, "agents": args.agents},
            "runs": [as_json(o) for o in outcomes],
            "violations": sum(len(o.violations) for o in outcomes),
        }
        OUT.mkdir(exist_ok=True)
        (OUT / "nemesis.json").write_text(json.dumps(data, indent=2, default=str))
        return data

    try:
        for k in range(args.runs):
            outcome = run(st, args.minutes * 60, seed + k, overlap=args.overlap)
            say(text(outcome))
            outcomes.append(outcome)
            data = save()
    finally:
        tidy(st)
    say(f"seed {seed}: {data['violations']} invariant violations over {len(outcomes)} run(s)")
    return 1 if data["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
