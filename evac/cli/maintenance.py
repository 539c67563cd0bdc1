"""``evac host disable|enable|list``: evac's maintenance state of hosts."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..states import HostMode
from .output import console, print_json, print_table
from .parser import Parser


def register(sub: Any) -> None:
    host = sub.add_parser("host", help="maintenance state of hosts")
    verbs = host.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for verb, helptext in (
        ("disable", "put a host in maintenance (no guests placed there)"),
        ("enable", "end maintenance"),
    ):
        p = verbs.add_parser(verb, help=helptext)
        p.add_argument("host")
        p.add_argument("--reason", default="")
        p.set_defaults(func=cmd_set, state=HostMode.MAINTENANCE if verb == "disable" else HostMode.ENABLED)
    listing = verbs.add_parser("list", help="hosts not enabled")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)


def cmd_set(args: argparse.Namespace) -> int:
    from . import make_app
    from .jobs import actor

    app = make_app(args)
    host = app.inventory.host(args.host).name
    app.journal.set_host_state(host, args.state, args.reason, str(actor()))
    app.journal.audit(str(actor()), f"host.{args.state}", host, {"reason": args.reason})
    console.print(f"{host}: {args.state}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from . import make_app

    states = list(make_app(args).journal.host_states().values())
    if args.json:
        print_json(states)
    else:
        rows = (
            (s.host, s.state, s.reason, s.actor, time.strftime("%Y-%m-%d %H:%M", time.localtime(s.since)))
            for s in states
        )
        print_table("hosts not enabled", ("host", "state", "reason", "by", "since"), rows)
    return 0
