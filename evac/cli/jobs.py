"""Job commands: ``run``, ``evacuate``, ``status``, ``history``, ``cancel``, ``resume``, ``approve``."""

from __future__ import annotations

import argparse
import getpass
import sys
import threading
import time
from typing import Any

from .. import signals
from ..app import App
from ..engine import JobResult
from ..errors import ConfigError
from ..jobs import Actor, Channel, Started
from ..journal import JobRecord
from ..params import parse_cli_params
from ..states import EventKind, JobState
from .output import console, print_json, print_table
from .progress import TerminalProgress


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run a runbook")
    run.add_argument("runbook", help="a runbook name (evac runbook list) or a YAML file")
    run.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--target", default="", help="what the job is about (shown in status; default: none)")
    run_options(run)
    run.set_defaults(func=cmd_run)

    evacuate = sub.add_parser("evacuate", help="drain a host (runs the maintenance runbook)")
    evacuate.add_argument("host")
    evacuate.add_argument("--runbook", default=None, help="(default: the config's runbooks.drain)")
    evacuate.add_argument("--reason", default="")
    evacuate.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    evacuate.add_argument("--force", action="store_true", help="drain even if the host is already in maintenance")
    evacuate.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE", help="runbook params")
    run_options(evacuate)
    evacuate.set_defaults(func=cmd_evacuate)

    status = sub.add_parser("status", help="running jobs, or one job in detail")
    status.add_argument("job", nargs="?", type=int)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    history = sub.add_parser("history", help="recent jobs")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    cancel = sub.add_parser("cancel", help="cancel a running job (it rolls back)")
    cancel.add_argument("job", type=int)
    cancel.set_defaults(func=cmd_cancel)

    resume = sub.add_parser("resume", help="continue jobs whose controller died")
    resume.add_argument("--json", action="store_true")
    resume.set_defaults(func=cmd_resume)

    approve = sub.add_parser("approve", help="approve a step waiting for approval")
    approve.add_argument("job", type=int)
    approve.add_argument("--step", help="the step (default: every step of the job waiting now)")
    approve.set_defaults(func=cmd_approve)


def run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="plan every step, change nothing")
    parser.add_argument("--approve", action="store_true", help="approve this job's approval gates up front")
    parser.add_argument("--json", action="store_true", help="print the result as JSON, no progress")


def confirmed(args: argparse.Namespace, question: str, command: str) -> bool:
    """A person says yes at a terminal; elsewhere ``--yes`` (or ``--dry-run``) is required."""
    if args.dry_run or args.yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"{command}: confirm with --yes (or look first with --dry-run)")
    if input(f"{question} [y/N] ").strip().lower() in ("y", "yes"):
        return True
    console.print("not started")
    return False


def actor() -> Actor:
    return Actor(Channel.CLI, getpass.getuser())


def cmd_run(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    given = parse_cli_params(app.runbook_file(args.runbook), args.param)
    started = app.jobs.start(args.runbook, given, actor(), args.target, dry_run=args.dry_run, approve=args.approve)
    return execute(app, started, args)[0]


def cmd_evacuate(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    host = app.inventory.host(args.host).name  # unknown host: a clear error before anything starts
    runbook, note = (args.runbook, "") if args.runbook else app.jobs.evacuation(host)
    given = parse_cli_params(app.runbook_file(runbook), args.param)
    if note:
        console.print(note)
    if not confirmed(args, f"Evacuate {host} with runbook '{runbook}'?", "evacuate"):
        return 1
    started = app.jobs.evacuate(
        host, actor(), args.reason, given, force=args.force, dry_run=args.dry_run, runbook=runbook
    )
    code, result = execute(app, started, args)
    if result and not args.json:
        print_drain(result, args.dry_run)
    return code


def print_drain(result: JobResult, dry_run: bool) -> None:
    """The plan (dry run) or the final report of a drain, as tables."""
    plan = result.outputs.get("plan") or {}
    report = None if dry_run else (result.outputs.get("report") or {}).get("rows")
    rows: list[tuple[Any, ...]]
    if report:
        rows = [
            (
                r["guest"],
                r.get("memory_mib", ""),
                r.get("from", plan.get("host", "")),
                r.get("to", ""),
                r["result"],
                r.get("seconds") or "",
                r.get("downtime_ms") if r.get("downtime_ms") is not None else "",
                r.get("unanswered_s") if r.get("unanswered_s") is not None else "",
                f"{(r.get('bytes') or 0) / 2**20:.0f} MiB" if r.get("bytes") else "",
                "; ".join(r.get("escalations") or []) or r.get("detail", ""),
            )
            for r in report
        ]
        columns = (
            "guest",
            "MiB",
            "from",
            "to",
            "result",
            "s",
            "downtime ms",
            "unanswered s",
            "moved",
            "escalations / why",
        )
        print_table(f"report: job {result.job_id}", columns, rows)
    elif plan:
        rows = [
            (m["guest"], m["memory_mib"], m["source"], m["target"], m["strategy"], m["reason"])
            for m in plan.get("moves", [])
        ]
        rows += [
            (u["guest"], u["memory_mib"], plan["source"], "-", "stays", u["reason"])
            for u in plan.get("unplaceable", [])
        ]
        print_table(f"drain plan for {plan['source']}", ("guest", "MiB", "from", "to", "strategy", "reason"), rows)
    for warning in plan.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")


def execute(app: App, started: Started, args: argparse.Namespace) -> tuple[int, JobResult | None]:
    """Run a job in a worker thread, so Ctrl-C cancels it cleanly (with rollback)."""
    if not getattr(args, "json", False):
        app.pm.register(TerminalProgress(console))
    results: list[JobResult] = []
    worker = threading.Thread(target=lambda: results.append(app.jobs.run(started)), name=f"job-{started.job}")
    worker.start()
    try:
        signals.join(worker)
    except KeyboardInterrupt:
        console.print(f"cancelling job {started.job} (rolling back; Ctrl-C again leaves it for `evac resume`)")
        app.jobs.cancel(started.job, actor())
        signals.join(worker)
    if not results:
        return 1, None
    result = results[0]
    if getattr(args, "json", False):
        print_json({"job": result.job_id, "state": result.state, "error": result.error, "steps": result.outputs})
    return (0 if result.state == JobState.SUCCEEDED else 1), result


def _job_row(job: JobRecord) -> tuple[Any, ...]:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created))
    took = f"{job.updated - job.created:.1f} s"
    return (
        job.id,
        job.runbook,
        job.target,
        job.state + (" (dry run)" if job.dry_run else "") + (" — orphaned: evac resume" if job.orphaned else ""),
        started,
        took,
        job.error,
    )


COLUMNS = ("job", "runbook", "target", "state", "started", "took", "error")


def cmd_status(args: argparse.Namespace) -> int:
    from . import make_app

    journal = make_app(args).journal
    if args.job is None:
        jobs = journal.unfinished_jobs()
        if args.json:
            print_json(jobs)
        else:
            print_table("running jobs", COLUMNS, (_job_row(j) for j in jobs))
        return 0
    job = journal.job(args.job)
    if job is None:
        raise ConfigError(f"status: no job {args.job}")
    events = [e for _, e in journal.events(job.id)]
    if args.json:
        print_json({"job": job, "events": events})
        return 0
    print_table(f"job {job.id}", COLUMNS, [_job_row(job)])
    steps = []
    for event in events:
        if event.kind == EventKind.STEP_FINISHED:
            steps.append((event.step, event.data.get("state"), event.data.get("seconds"), event.message))
    print_table("steps", ("step", "state", "seconds", "error"), steps)
    items = [(e.step, e.item, e.data.get("state"), e.message) for e in events if e.kind == EventKind.ITEM_FINISHED]
    if items:
        print_table("items", ("step", "item", "state", "detail"), items)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from . import make_app

    jobs = make_app(args).journal.jobs(args.limit)
    if args.json:
        print_json(jobs)
    else:
        print_table("history", COLUMNS, (_job_row(j) for j in jobs))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from . import make_app

    job = make_app(args).jobs.cancel(args.job, actor())
    if job.finished:
        console.print(f"job {job.id} already {job.state}")
    else:
        console.print(f"job {job.id}: cancel requested; it stops new work, aborts what runs and rolls back")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    if not args.json:
        app.pm.register(TerminalProgress(console))
    claimed = app.jobs.resumable(actor())
    ours = {started.job for started in claimed}
    outcomes: list[dict[str, Any]] = [
        {"job": job.id, "state": "running elsewhere"} for job in app.journal.unfinished_jobs() if job.id not in ours
    ]
    for started in claimed:
        result = app.jobs.run(started)
        outcomes.append({"job": started.job, "state": result.state, "error": result.error})
    if args.json:
        print_json(outcomes)
    elif not outcomes:
        console.print("nothing to resume")
    return 0 if all(o["state"] in (JobState.SUCCEEDED, "running elsewhere") for o in outcomes) else 1


def cmd_approve(args: argparse.Namespace) -> int:
    from . import make_app

    for step in make_app(args).jobs.approve(args.job, actor(), args.step):
        console.print(f"job {args.job}: step {step} approved")
    return 0
