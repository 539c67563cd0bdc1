"""``evac runbook validate|list|show``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runbook import check_runbook, load_runbook
from .output import console, print_json, print_table
from .parser import Parser


def register(sub: Any) -> None:
    runbook = sub.add_parser("runbook", help="validate, list and show runbooks")
    verbs = runbook.add_subparsers(dest="verb", required=True, parser_class=Parser)
    validate = verbs.add_parser("validate", help="check runbook files; every problem with file:line")
    validate.add_argument("files", nargs="+", type=Path)
    validate.set_defaults(func=cmd_validate)
    listing = verbs.add_parser("list", help="runbooks shipped by evac and plugins")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
    show = verbs.add_parser("show", help="one runbook: params and steps")
    show.add_argument("runbook")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)


def cmd_validate(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    problems: list[str] = []
    for path in args.files:
        try:
            runbook = load_runbook(path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        problems += [str(p) for p in check_runbook(runbook, app.engine.actions, set(app.engine.errors))]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    console.print(f"{len(args.files)} runbook(s) valid")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from . import make_app

    rows = []
    for name, path in make_app(args).runbook_paths().items():
        try:
            description = load_runbook(path).description.strip().splitlines()[0]
        except (ConfigError, IndexError):
            description = ""
        rows.append({"name": name, "path": str(path), "description": description})
    if args.json:
        print_json(rows)
    else:
        print_table(
            "runbooks", ("name", "description", "path"), ((r["name"], r["description"], r["path"]) for r in rows)
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import make_app

    runbook = make_app(args).runbook(args.runbook)
    if args.json:
        print_json(runbook)
        return 0
    console.print(f"[bold]{runbook.name}[/] ({runbook.source})\n{runbook.description.strip()}")
    print_table(
        "params",
        ("name", "type", "required", "default"),
        ((p.name, p.type, p.required, p.default) for p in runbook.params),
    )
    rows = []
    for step in runbook.steps:
        extra = []
        if step.for_each is not None:
            extra.append(f"for_each x{step.concurrency}")
        if step.retry.attempts > 1:
            extra.append(f"retry {step.retry.attempts}")
        if step.approval:
            extra.append("approval")
        if step.rollback:
            extra.append("rollback: " + ", ".join(r.id for r in step.rollback))
        rows.append((step.id, step.action, step.when or "", "; ".join(extra)))
    print_table("steps", ("id", "action", "when", "notes"), rows)
    return 0
