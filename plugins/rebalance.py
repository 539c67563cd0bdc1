"""Rebalancing actions and the periodic rebalance of ``evac serve``.

``vm.plan_rebalance`` runs the pure planner (:func:`evac.rebalance.plan_rebalance`) on a
live snapshot of the fleet, for a dry run and a real run alike, so what ``evac
rebalance`` and Slack preview is what the engine then does. ``report.rebalance`` ends
the job with every planned move's outcome. Also claims the ``rebalance:`` section of
evac.yaml, whose ``every`` makes ``evac serve`` start the ``rebalance`` runbook on its
own (off by default).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from evac import Action, StepContext, hookimpl
from evac.appview import AppView
from evac.config import ServiceConfig
from evac.coordination import Coordination
from evac.errors import EvacError, Incomplete, LockedError
from evac.fleet import views
from evac.jobs import Actor, Channel, Jobs
from evac.periodic import Periodic
from evac.rebalance import RUNBOOK, TARGET, RebalancePlan, RebalanceSettings, parse_rebalance, plan_rebalance

from .drain import app_of, chooser, move_rows, policy

log = logging.getLogger("evac.rebalance")


# ---------------------------------------------------------------- plan
def plan(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    settings = RebalanceSettings.of(app.settings.sections)
    found = plan_rebalance(
        views(app),
        policy(ctx.inputs),
        max_moves=int(ctx.inputs.get("max_moves", settings.max_moves)),
        threshold=float(ctx.inputs.get("threshold", settings.threshold)),
        choose=chooser(app),
    )
    for warning in found.warnings:
        ctx.progress(f"warning: {warning}")
    ctx.progress(found.summary)
    return found.as_dict()


# ---------------------------------------------------------------- report
def report(ctx: StepContext) -> Mapping[str, Any]:
    """Every planned move with its outcome, and every guest left on a host its rule forbids.

    Raises when a planned move did not happen, so a rebalance never reports success early;
    a guest no allowed host can take is listed, not a failure (the next run tries again)."""
    planned = ctx.inputs.get("plan") or {}
    migrated = ctx.inputs.get("migrate") or {}
    rows = move_rows(planned, migrated)
    for stuck in planned.get("unplaceable", []):
        rows.append(
            {"guest": stuck["guest"], "memory_mib": stuck["memory_mib"], "from": "", "to": "", "result": "stays"}
            | {"detail": stuck["reason"]}
        )
    failed = [r["guest"] for r in rows if r["result"] == "failed"]
    moves = len(planned.get("moves", []))
    summary = (
        f"rebalance: {moves - len(failed)} of {moves} moves done; memory load spread "
        f"{planned.get('spread_before', 0):g} -> {planned.get('spread_after', 0):g} points as planned"
    )
    ctx.progress(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
    outputs = {"rows": rows, "summary": summary}
    if failed and not ctx.dry_run:
        raise Incomplete(f"{summary}; {len(failed)} failed: {', '.join(failed)}", outputs)
    return outputs


# ---------------------------------------------------------------- periodic runs
class Runner(AppView, Protocol):
    """What the periodic rebalance needs of the app ``evac serve`` runs (``evac.app.App``)."""

    @property
    def jobs(self) -> Jobs: ...
    @property
    def coordination(self) -> Coordination: ...


class RebalanceService(Periodic):
    """Starts the ``rebalance`` runbook every ``rebalance.every`` seconds, on the leader
    only, when its plan has moves. It waits while any other job runs (a drain or a
    failover places guests on a fleet it is changing) and while HA is disarmed (an
    operator holding evac's automation); a rebalance already running holds its lock."""

    def __init__(self, app: Runner, settings: RebalanceSettings) -> None:
        if settings.every is None:
            raise EvacError("rebalance: the periodic rebalance needs rebalance.every")
        super().__init__(settings.every, "rebalance")
        self.app = app
        self.settings = settings

    def tick(self) -> int | None:
        """One round: the job started, or None (and why, in the log)."""
        if not self.app.coordination.leads():
            return None
        busy = [j for j in self.app.journal.unfinished_jobs() if not j.dry_run]
        if busy:
            log.info("periodic rebalance waits: job %s (%s) runs", busy[0].id, busy[0].runbook)
            return None
        held = self.app.journal.disarmed()
        if held is not None:
            log.info("periodic rebalance waits: HA is disarmed (%s)", held.reason)
            return None
        found = self.plan()
        if not found.moves:
            return None
        try:
            started = self.app.jobs.start(RUNBOOK, self.settings.params(), Actor(Channel.SERVICE, "rebalance"), TARGET)
        except LockedError as exc:
            log.info("periodic rebalance skipped: %s", exc)
            return None
        log.info("periodic rebalance: job %s, %s", started.job, found.summary)
        self.app.jobs.spawn(started)
        return started.job

    def plan(self) -> RebalancePlan:
        """Whether a round has anything to do: the planner the job's plan step runs, on a
        fresh snapshot, without recording a dry-run job every period (the job plans again)."""
        s = self.settings
        return plan_rebalance(views(self.app), policy({}), s.max_moves, s.threshold, chooser(self.app))


# ---------------------------------------------------------------- hooks
@hookimpl
def evac_config_sections() -> dict[str, Any]:
    return {"rebalance": parse_rebalance}


@hookimpl
def evac_services(app: Runner, config: ServiceConfig) -> list[RebalanceService]:
    settings = RebalanceSettings.of(config.sections)
    return [RebalanceService(app, settings)] if settings.every is not None else []


@hookimpl
def evac_actions() -> list[Action]:
    return [
        Action(
            "vm.plan_rebalance",
            plan,
            plan=plan,
            description=(
                "Plan moves that fix broken hosts rules, empty spare hosts and even out memory load"
                " (pure placement, a reason per move)."
            ),
            inputs=("max_moves", "threshold", "memory_overcommit", "cpu_overcommit", "headroom_mib"),
        ),
        Action(
            "report.rebalance",
            report,
            plan=report,
            description="The rebalance's final report; fails when a planned move did not happen.",
            inputs=("plan", "migrate"),
            required=("plan",),
        ),
    ]
