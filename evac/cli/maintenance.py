"""``evac host disable|enable|list``: evac's maintenance state of hosts.

``host disable HOST --drain`` and ``host enable HOST --return`` also move the guests: the
first runs the drain runbook as ``evac evacuate`` does, the second the
``maintenance-return`` runbook (back to HOST what its last drain took off it).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..engine import JobResult
from ..errors import ConfigError, FencingError
from ..params import parse_cli_params
from ..returning import RUNBOOK
from ..states import HostMode
from .jobs import actor, confirmed, execute, print_drain, run_options
from .output import console, print_json, print_table
from .parser import Parser


def register(sub: Any) -> None:
    host = sub.add_parser("host", help="maintenance state of hosts")
    verbs = host.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for verb, helptext, flag, flaghelp in (
        (
            "disable",
            "put a host in maintenance (no guests placed there)",
            "--drain",
            "then drain it: the drain runbook, as `evac evacuate HOST` runs it",
        ),
        (
            "enable",
            "end maintenance",
            "--return",
            f"then bring back the guests its last drain moved off it (runbook '{RUNBOOK}')",
        ),
    ):
        p = verbs.add_parser(verb, help=helptext)
        p.add_argument("host")
        p.add_argument("--reason", default="")
        p.add_argument(flag, dest="move", action="store_true", help=flaghelp)
        p.add_argument("--yes", "-y", action="store_true", help=f"with {flag}: do not ask for confirmation")
        p.add_argument(
            "--param", "-p", action="append", default=[], metavar="KEY=VALUE", help=f"with {flag}: runbook params"
        )
        run_options(p)
        p.set_defaults(func=cmd_set, state=HostMode.MAINTENANCE if verb == "disable" else HostMode.ENABLED, flag=flag)
    listing = verbs.add_parser("list", help="hosts not enabled")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)


def cmd_set(args: argparse.Namespace) -> int:
    from . import make_app

    given = [o for o, on in (("--yes", args.yes), ("--param", args.param), *_job_options(args)) if on]
    if given and not args.move:
        raise ConfigError(f"host {args.verb}: {given[0]} needs {args.flag}")
    if args.move:
        return cmd_drain(args) if args.state == HostMode.MAINTENANCE else cmd_return(args)
    app = make_app(args)
    host = app.inventory.host(args.host).name
    state = app.journal.host_states().get(host)
    if state is not None and state.state == HostMode.FENCED:  # disabled, it would then be enabled uncleaned
        raise FencingError(
            f"host {args.verb}: {host} is fenced: `evac host enable {host} --return` checks that it answers"
            " and removes its stale guests before it enables it"
        )
    app.journal.set_host_state(host, args.state, args.reason, str(actor()))
    app.journal.audit(str(actor()), f"host.{args.state}", host, {"reason": args.reason})
    console.print(f"{host}: {args.state}")
    return 0


def _job_options(args: argparse.Namespace) -> list[tuple[str, bool]]:
    return [("--dry-run", args.dry_run), ("--approve", args.approve), ("--json", args.json)]


def cmd_drain(args: argparse.Namespace) -> int:
    """Disable, then drain: one job of the drain runbook, whose first step disables the
    host (with ``--reason``). A host already in maintenance is drained of what is left."""
    from . import make_app

    app = make_app(args)
    host = app.inventory.host(args.host).name
    drain = app.settings.runbooks.drain
    if app.jobs.evacuation(host)[0] != drain:
        raise ConfigError(
            f"host disable --drain: {host} does not answer and a drain needs it up"
            f" (`evac evacuate {host}` fails it over; `evac host disable {host}` only marks it)"
        )
    given = parse_cli_params(app.runbook_file(drain), args.param)
    if not confirmed(args, f"Disable {host} and drain it with runbook '{drain}'?", "host disable --drain"):
        return 1
    state = app.journal.host_states().get(host)
    force = state is not None and state.state == HostMode.MAINTENANCE
    started = app.jobs.evacuate(host, actor(), args.reason, given, force=force, dry_run=args.dry_run, runbook=drain)
    code, result = execute(app, started, args)
    if result and not args.json:
        print_drain(result, args.dry_run)
    return code


def cmd_return(args: argparse.Namespace) -> int:
    """Enable, then return the guests: the runbook's ``host.enable`` step enables the host,
    so the job is recorded (taking the host's lock, audited by the front door) before
    anything changes; a host another job holds is refused as is; a dry run enables nothing."""
    from . import make_app

    app = make_app(args)
    host = app.inventory.host(args.host).name
    given = {**parse_cli_params(app.runbook_file(RUNBOOK), args.param), "host": host}
    if not confirmed(args, f"Enable {host} and move its guests back (runbook '{RUNBOOK}')?", "host enable --return"):
        return 1
    started = app.jobs.start(RUNBOOK, given, actor(), host, dry_run=args.dry_run, approve=args.approve)
    code, result = execute(app, started, args)
    if result and not args.json:
        print_return(result, args.dry_run)
    return code


def print_return(result: JobResult, dry_run: bool) -> None:
    """The report of a return (as a drain's), or its plan when there is no report."""
    plan = result.outputs.get("plan") or {}
    if not dry_run and (result.outputs.get("report") or {}).get("rows"):
        print_drain(result, dry_run)
        return
    if plan:
        rows = [
            (m["guest"], m["memory_mib"], m["source"], m["target"], m["strategy"], m["reason"])
            for m in plan.get("moves", [])
        ]
        rows += [(s["guest"], "", "", "-", "stays", s["reason"]) for s in plan.get("skipped", [])]
        print_table(f"return plan for {plan['host']}", ("guest", "MiB", "from", "to", "strategy", "reason"), rows)
    for warning in plan.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")


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
