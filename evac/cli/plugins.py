"""``evac plugins``: what is loaded, and which actions each plugin registers."""

from __future__ import annotations

import argparse
from typing import Any

from ..plugins import registered_actions
from .output import print_json, print_table


def register(sub: Any) -> None:
    parser = sub.add_parser("plugins", help="loaded plugins and their actions")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import make_app

    pm = make_app(args).pm
    by_plugin: dict[str, list[str]] = {name: [] for name, _ in pm.list_name_plugin() if name}
    for plugin, action in registered_actions(pm):
        by_plugin.setdefault(plugin, []).append(action.name)
    rows = [{"plugin": name, "actions": sorted(actions)} for name, actions in sorted(by_plugin.items())]
    if args.json:
        print_json(rows)
    else:
        print_table("plugins", ("plugin", "actions"), ((r["plugin"], ", ".join(r["actions"])) for r in rows))
    return 0
