"""``evac doctor [HOST...] [--json] [--power-cycle-test]``: is this fleet safe to automate?

Runs every registered doctor check on the named hosts (default: all), prints one row per
host and check, and records each host's run in the journal, where
``evac.doctor.last_doctor`` finds it. Exit code 0 when no check failed, 1 when one did,
2 on bad input (an unknown host).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.markup import escape

from ..doctor import diagnose, exit_code, report_json, table_rows
from .output import print_table


def register(sub: Any) -> None:
    parser = sub.add_parser("doctor", help="check that hosts are safe to automate (locks, fencing, autostart, ...)")
    parser.add_argument("hosts", nargs="*", metavar="HOST", help="hosts to check (default: every inventory host)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (docs/doctor.md)")
    parser.add_argument(
        "--power-cycle-test",
        action="store_true",
        help="also power off, for real, each named host that is in maintenance (evac host disable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    inventory = app.inventory
    hosts = [inventory.host(name) for name in args.hosts] if args.hosts else None
    runs = diagnose(app, hosts, args.power_cycle_test)
    if args.json:
        sys.stdout.write(report_json(runs) + "\n")
    else:
        print_table(
            f"evac doctor ({inventory.source}; * = safety check)",
            ("host", "check", "result", "evidence", "fix"),
            # evidence quotes libvirt's errors verbatim: "[path]" is text, not rich markup
            [tuple(escape(cell) for cell in row) for row in table_rows(runs)],
        )
    return exit_code(runs)
