"""Return after maintenance: ``vm.plan_return`` and ``report.return``.

The plan reads the journal for where the host's last drain put each guest
(:mod:`evac.returning` says which drain counts) and plans, on a live snapshot of the
fleet, each one's way back through the same placement as a drain, restricted to the
host. The ``maintenance-return`` runbook then moves them with ``vm.live_migrate`` and
checks them with ``vm.verify``, as the drain does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evac import Action, StepContext, hookimpl
from evac.appview import AppView
from evac.errors import ConfigError, EvacError, Incomplete
from evac.fleet import views
from evac.journal import JobRecord
from evac.returning import RUNBOOK, JobKind, Moved, PastJob, origins, plan_return
from evac.runbook import load_runbook
from evac.states import Health, HostMode, ItemState

from .drain import app_of, move_rows, planned_moves, policy

HISTORY = 500  # the latest jobs searched for the host's drain
UNREADABLE = ("unreachable", Health.DOWN, HostMode.FENCED)


# ---------------------------------------------------------------- the journal's history
def history(app: AppView, host: str, now: int) -> list[PastJob]:
    """The finished drains and returns of ``host`` among the journal's latest jobs
    (dry runs and the job ``now`` planning left out)."""
    drain = app.settings.runbooks.drain
    returns = {RUNBOOK, *(j.runbook for j in [app.journal.job(now)] if j is not None)}
    found = []
    for job in app.journal.jobs(HISTORY):
        if job.id == now or job.dry_run or not job.finished or job.params.get("host") != host:
            continue
        if job.runbook == drain:
            found.append(past(app, job, JobKind.DRAIN))
        elif job.runbook in returns:
            found.append(past(app, job, JobKind.RETURN))
    return found


def past(app: AppView, job: JobRecord, kind: JobKind) -> PastJob:
    moved = []
    for step in step_ids(job, "vm.live_migrate", "migrate"):
        for key, item in app.journal.items(job.id, step).items():
            out = item.outputs
            if item.state == ItemState.SUCCEEDED and out.get("source") and out.get("target"):
                moved.append(Moved(str(out.get("guest", key)), str(out["source"]), str(out["target"])))
    continues = False
    if kind is JobKind.DRAIN:
        for step in step_ids(job, "host.disable", "disable"):
            record = app.journal.step(job.id, step)
            continues = continues or bool(record and record.outputs.get("was") == HostMode.MAINTENANCE)
    return PastJob(job.id, kind, tuple(moved), continues)


def step_ids(job: JobRecord, action: str, default: str) -> list[str]:
    """The job's steps that ran ``action``, from its runbook file; ``default`` when the file
    is gone or unreadable (the shipped runbooks use it)."""
    try:
        book = load_runbook(Path(job.source))
    except (ConfigError, OSError):
        return [default]
    return [s.id for s in book.all_steps() if s.action == action] or [default]


# ---------------------------------------------------------------- plan
def plan(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    host = app.inventory.host(str(ctx.inputs["host"])).name
    hosts = views(app)
    state = next(v.state for v in hosts if v.name == host)
    if state in UNREADABLE:
        raise EvacError(f"{host} is {state}: guests can return only to a host that is up")
    drains, found = origins(host, history(app, host, ctx.job_id))
    planned = plan_return(host, drains, found, hosts, policy(ctx.inputs))
    for warning in planned.warnings:
        ctx.progress(f"warning: {warning}")
    for skip in planned.skipped:
        ctx.progress(f"{skip.guest} stays: {skip.reason}")
    result = planned.as_dict()
    result["moves"] = planned_moves(planned.moves, (g for v in hosts for g in v.guests))
    return result


# ---------------------------------------------------------------- report
def report(ctx: StepContext) -> Mapping[str, Any]:
    """Every guest the drain took off the host: returned, failed, or skipped and why.

    Raises when a planned move did not happen, so a return never reports success early;
    a skipped guest (moved or stopped since, no room) is reported, not a failure."""
    host = str(ctx.inputs["host"])
    planned = ctx.inputs.get("plan") or {}
    migrated = ctx.inputs.get("migrate") or {}
    rows = move_rows(planned, migrated, "returned", "would return")
    for skip in planned.get("skipped", []):
        rows.append({"guest": skip["guest"], "from": "", "to": "", "result": "skipped", "detail": skip["reason"]})
    failed = [r["guest"] for r in rows if r["result"] == "failed"]
    back = sum(r["result"] in ("returned", "would return") for r in rows)
    skipped = len(rows) - back - len(failed)
    summary = f"{host}: {back} of {len(rows)} guests returned" + (f", {skipped} skipped" if skipped else "")
    ctx.progress(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
    outputs = {"host": host, "rows": rows, "summary": summary}
    if failed and not ctx.dry_run:
        raise Incomplete(f"{summary}; {len(failed)} failed to return: {', '.join(failed)}", outputs)
    return outputs


@hookimpl
def evac_actions() -> list[Action]:
    return [
        Action(
            "vm.plan_return",
            plan,
            plan=plan,
            description=(
                "Plan the way back to a host for the guests its last drain moved off it"
                " (skipping those moved or stopped since, or that no longer fit)."
            ),
            inputs=("host", "memory_overcommit", "cpu_overcommit", "headroom_mib"),
            required=("host",),
        ),
        Action(
            "report.return",
            report,
            plan=report,
            description="A return's final report; fails while a planned return did not happen.",
            inputs=("host", "plan", "migrate"),
            required=("host", "plan"),
        ),
    ]
