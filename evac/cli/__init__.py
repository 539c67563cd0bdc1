"""The ``evac`` command line. Each command group lives in its own module.

Bad input exits with code 2 and a one-line message; nothing is started.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, EvacError
from . import hosts, lab
from .parser import Parser

COMMANDS = (lab, hosts)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="evac", description="Evacuation and HA for libvirt/KVM fleets.")
    parser.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="hosts.yaml (default: $EVAC_INVENTORY, /etc/evac/hosts.yaml, then the local lab's)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.register(sub)
    return parser


def inventory_path(args: argparse.Namespace) -> Path:
    if args.inventory:
        return Path(args.inventory)
    if os.environ.get("EVAC_INVENTORY"):
        return Path(os.environ["EVAC_INVENTORY"])
    system = Path("/etc/evac/hosts.yaml")
    if system.exists():
        return system
    from ..lab.rig import DEFAULT_DIR

    return DEFAULT_DIR / "hosts.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
