"""``evac hosts``: every host's state, room and guests, read live."""

from __future__ import annotations

import argparse
from typing import Any

from ..fleet import snapshot
from .output import print_json, print_table


def register(sub: Any) -> None:
    parser = sub.add_parser("hosts", help="show hosts, their capacity and guests (live)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import make_app

    inventory = make_app(args).inventory
    hosts = snapshot(inventory)
    if args.json:
        print_json(hosts)
        return 0
    rows = []
    for host in hosts:
        cap = host.capacity
        room = f"{cap.free_memory_mib} MiB free / {cap.cpus} CPUs" if cap else host.error
        guests = ", ".join(f"{g.name} ({g.state}, {g.memory_mib} MiB)" for g in host.guests) or "-"
        rows.append((host.name, host.uri, host.state, room, guests))
    print_table(f"hosts ({inventory.source})", ("host", "uri", "state", "capacity", "guests"), rows)
    return 0
