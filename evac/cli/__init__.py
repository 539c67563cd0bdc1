"""The ``evac`` command line. Each command group lives in its own module.

Bad input exits with code 2 and a one-line message; nothing is started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pluggy

from .. import app as evac_app
from ..app import App
from ..errors import ConfigError, EvacError
from ..plugins import plugin_manager
from . import agent, doctor, failover, ha, hosts, jobs, journal, lab, maintenance, plugins, rebalance, runbooks, serve
from .parser import Parser

COMMANDS = (lab, hosts, maintenance, jobs, failover, ha, rebalance, serve, agent, runbooks, plugins, journal, doctor)


def build_parser(pm: pluggy.PluginManager | None = None) -> argparse.ArgumentParser:
    pm = pm or plugin_manager()
    parser = Parser(prog="evac", description="Evacuation and HA for libvirt/KVM fleets.")
    parser.set_defaults(pm=pm)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="evac.yaml: inventory, journal and settings for every command "
        "(default: $EVAC_CONFIG, /etc/evac/evac.yaml if present, else the documented defaults)",
    )
    parser.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="hosts.yaml, over the config's (default: $EVAC_INVENTORY, /etc/evac/hosts.yaml, then the local lab's)",
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
    _config_on_every_command(sub)
    return parser


def _config_on_every_command(sub: argparse._SubParsersAction[Any]) -> None:
    """``evac serve --config F`` as well as ``evac --config F serve``, on every command
    (plugins' included); a command's own ``--config`` keeps its help."""
    for command in sub.choices.values():
        if "--config" not in command._option_string_actions:
            command.add_argument(
                "--config", type=Path, default=argparse.SUPPRESS, help="evac.yaml (as `evac --config`)"
            )
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _config_on_every_command(action)


def make_app(args: argparse.Namespace) -> App:
    """The app for the parsed command line: ``--config`` with ``--inventory``/``--journal`` over it.
    Its etcd session, if any, ends with the command (a job it started and left is orphaned at once)."""
    app = evac_app.make_app(args.config, args.pm, args.inventory, args.journal)
    _made.append(app)
    return app


_made: list[App] = []  # closed when the command returns (main's finally)


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
    finally:
        while _made:
            _made.pop().close()
