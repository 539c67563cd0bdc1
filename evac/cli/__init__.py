"""The ``evac`` command line. Each command group lives in its own module.

Bad input exits with code 2 and a one-line message; nothing is started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pluggy

from ..app import App, default_inventory_path, default_journal_path
from ..errors import ConfigError, EvacError
from ..plugins import plugin_manager
from . import failover, hosts, jobs, lab, maintenance, plugins, runbooks, serve
from .parser import Parser

COMMANDS = (lab, hosts, maintenance, jobs, failover, serve, runbooks, plugins)


def build_parser(pm: pluggy.PluginManager | None = None) -> argparse.ArgumentParser:
    pm = pm or plugin_manager()
    parser = Parser(prog="evac", description="Evacuation and HA for libvirt/KVM fleets.")
    parser.set_defaults(pm=pm)
    parser.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="hosts.yaml (default: $EVAC_INVENTORY, /etc/evac/hosts.yaml, then the local lab's)",
    )
    parser.add_argument(
        "--journal",
        type=Path,
        default=None,
        help="journal database (default: $EVAC_JOURNAL; the lab's own with a lab inventory; /var/lib/evac/journal.db)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.register(sub)
    pm.hook.evac_commands(subparsers=sub)
    return parser


def make_app(args: argparse.Namespace) -> App:
    inventory = args.inventory or default_inventory_path()
    return App(inventory_path=inventory, journal_path=args.journal or default_journal_path(inventory), pm=args.pm)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ConfigError as exc:
        print(f"evac: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"evac: error: {exc}", file=sys.stderr)
        return 2
    except EvacError as exc:
        print(f"evac: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
