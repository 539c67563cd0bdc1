"""``evac rebalance``: even out the hosts' load, within every guest's rules.

It shows the plan first (each move with its reason, and each host's load before and
after), asks as ``evac evacuate`` does, then runs the ``rebalance`` runbook as one job
through the front door. ``--dry-run`` shows the plan and stops: the same plan step,
recorded nowhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..engine import JobResult
from ..errors import EvacError
from ..params import parse_cli_params
from ..rebalance import RUNBOOK, TARGET
from .jobs import actor, confirmed, execute, run_options
from .output import console, print_json, print_table


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "rebalance",
        help="even out memory load across hosts (shows the plan, then asks)",
        description="Plan moves that fix guests on hosts their hosts rule forbids, empty spare hosts and even "
        "out memory load, within every rule a drain keeps; show them with the load per host, then run them.",
    )
    parser.add_argument(
        "--max-moves", type=_positive, default=None, metavar="N", help="most guests moved (default: 10, or config)"
    )
    parser.add_argument(
        "--threshold",
        type=_percent,
        default=None,
        metavar="PCT",
        help="stop when the memory load spread is this many percent points or less (default: 10, or config)",
    )
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE", help="runbook params")
    run_options(parser)
    parser.set_defaults(func=cmd_rebalance)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percent points, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected 0-100 percent points, got {text}")
    return value


def cmd_rebalance(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    given = parse_cli_params(app.runbook_file(RUNBOOK), args.param)  # over the rebalance: section's (Jobs.defaults)
    for key, value in (("max_moves", args.max_moves), ("threshold", args.threshold)):
        if value is not None:
            given[key] = value
    preview = app.jobs.preview(RUNBOOK, given, TARGET)
    plan = preview.outputs.get("plan")
    if not plan:
        raise EvacError(f"rebalance: no plan: {preview.error or 'the plan step returned nothing'}")
    if args.json and (args.dry_run or not plan["moves"]):
        print_json({"plan": plan})
        return 0
    if not args.json:
        print_plan(plan)
    if args.dry_run:
        return 0
    if not plan["moves"]:
        console.print("nothing to move")
        return 0
    count = len(plan["moves"])
    if not confirmed(args, f"Move {count} guest{'' if count == 1 else 's'} (runbook '{RUNBOOK}')?", "rebalance"):
        return 1
    started = app.jobs.start(RUNBOOK, given, actor(), TARGET, approve=args.approve)
    code, result = execute(app, started, args)
    if result and not args.json:
        print_report(result)
    return code


def print_plan(plan: Mapping[str, Any]) -> None:
    """The moves with their reasons, what stays against its rule, and each host's load."""
    rows: list[tuple[Any, ...]] = [
        (m["guest"], m["memory_mib"], m["source"], m["target"], m["kind"], m["reason"]) for m in plan["moves"]
    ]
    rows += [(u["guest"], u["memory_mib"], "", "-", "stays", u["reason"]) for u in plan["unplaceable"]]
    if rows:
        print_table("rebalance plan", ("guest", "MiB", "from", "to", "kind", "reason"), rows)
    print_table(
        "load per host", ("host", "state", "memory before", "memory after", "vCPUs before", "vCPUs after"), _loads(plan)
    )
    for warning in plan.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(plan["summary"])


def _loads(plan: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    def memory(load: Mapping[str, Any]) -> str:
        return f"{load['memory_mib']}/{load['capacity_mib']} MiB ({load['memory_pct']:g}%)"

    def vcpus(load: Mapping[str, Any]) -> str:
        return f"{load['vcpus']}/{load['cpu_capacity']} ({load['vcpu_pct']:g}%)"

    rows = []
    for host, before in plan["before"].items():
        after = plan["after"][host]
        state = before["state"] + (" (spare)" if before["spare"] else "")
        rows.append((host, state, memory(before), memory(after), vcpus(before), vcpus(after)))
    return rows


def print_report(result: JobResult) -> None:
    report = result.outputs.get("report") or {}
    rows = [
        (r["guest"], r.get("memory_mib", ""), r["from"], r["to"], r["result"], r.get("seconds") or "", r["detail"])
        for r in report.get("rows", [])
    ]
    if rows:
        print_table(f"report: job {result.job_id}", ("guest", "MiB", "from", "to", "result", "s", "why"), rows)
    if report.get("summary"):
        console.print(report["summary"])
