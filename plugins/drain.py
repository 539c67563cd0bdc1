"""Drain actions: maintenance state, the drain plan, verification and the final report.

``vm.plan_drain`` runs the same pure placement for a dry run and a real run, so what
``--dry-run`` shows is what the engine then does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from evac import Action, StepContext, hookimpl
from evac.appview import AppView
from evac.connections import current
from evac.errors import EvacError, HostUnreachable, Incomplete, NotFound
from evac.fencedhost import clean
from evac.fleet import reachable, views
from evac.model import Guest
from evac.placement import Move, Policy, plan_drain
from evac.states import Health, HostMode


def app_of(ctx: StepContext) -> AppView:
    """The running evac; an engine built without one (a bare unit test) cannot run these actions."""
    if ctx.app is None:
        raise EvacError(f"step '{ctx.step}': this action needs the evac app (build the Engine with app=...)")
    return ctx.app


def chooser(app: AppView) -> Any:
    def choose(guest: Guest, candidates: list[str]) -> str | None:
        answer: str | None = app.pm.hook.evac_choose_target(guest=guest, candidates=candidates)
        return answer

    return choose


def policy(inputs: Mapping[str, Any]) -> Policy:
    return Policy(
        memory_overcommit=float(inputs.get("memory_overcommit", 1.0)),
        cpu_overcommit=float(inputs.get("cpu_overcommit", 4.0)),
        headroom_memory_mib=int(inputs.get("headroom_mib", 256)),
    )


# ---------------------------------------------------------------- host state
def disable(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    host = app.inventory.host(str(ctx.inputs["host"])).name
    before = app.journal.host_states().get(host)
    app.journal.set_host_state(host, HostMode.MAINTENANCE, str(ctx.inputs.get("reason", "")), f"job:{ctx.job_id}")
    ctx.progress(f"{host} in maintenance: placement leaves it alone, and monitoring once this drain succeeded")
    found = {"state": str(before.state), "reason": before.reason, "by": before.actor} if before else None
    return {"host": host, "was": before.state if before else HostMode.ENABLED, "before": found}


def restore(ctx: StepContext) -> Mapping[str, Any]:
    """Put a host back as ``host.disable`` found it (``before``: its state, its reason and
    who set it; none: enabled), the drain's rollback. Enabling it instead put a host that
    was already in maintenance, or fenced, back in service when a drain of it failed
    (found by the nemesis, seed 1414496797: a dead host drained again after its drain had
    emptied it, enabled by the failed drain's rollback, was then failed over by nobody)."""
    app = app_of(ctx)
    host = app.inventory.host(str(ctx.inputs["host"])).name
    before = ctx.inputs.get("before")
    if not isinstance(before, Mapping):
        app.journal.set_host_state(host, HostMode.ENABLED, "", f"job:{ctx.job_id}")
        ctx.progress(f"{host} enabled again")
        return {"host": host, "state": str(HostMode.ENABLED)}
    state = HostMode(str(before["state"]))
    app.journal.set_host_state(host, state, str(before.get("reason", "")), str(before.get("by", "")))
    ctx.progress(f"{host} back in {state}, as this job found it")
    return {"host": host, "state": str(state)}


REACH_TIMEOUT = 2.0  # s for a host's libvirt port to answer before it is enabled


def enable(ctx: StepContext) -> Mapping[str, Any]:
    """Back in service. A fenced host must answer first, and is cleaned before it is
    enabled (:mod:`evac.fencedhost`): enabled while still off, it would come back later
    without that cleaning, found by the nemesis when a return was asked for a host its
    failover had just powered off; enabled before the monitor reconnects, it would be
    passed by."""
    app = app_of(ctx)
    spec = app.inventory.host(str(ctx.inputs["host"]))
    host = spec.name
    state = app.journal.host_states().get(host)
    if not reachable(spec.uri, REACH_TIMEOUT):
        fenced = "is fenced and " if state is not None and state.state == HostMode.FENCED else ""
        raise HostUnreachable(f"{host} {fenced}does not answer: power it on and check it before it is enabled")
    if state is not None and state.state == HostMode.FENCED:
        with current().use(spec) as hv:
            cleaning = clean(app, spec, hv, ctx.guard)  # a deposed owner must not touch the host
        for name in cleaning.removed:
            ctx.progress(f"{host}: removed stale definition of {name}, which runs elsewhere")
        if cleaning.failed:
            name, why = next(iter(cleaning.failed.items()))
            raise EvacError(f"{host} is fenced and still defines {name}, which runs elsewhere: {why}")
    app.journal.set_host_state(host, HostMode.ENABLED, "", f"job:{ctx.job_id}")
    ctx.progress(f"{host} enabled")
    return {"host": host}


# ---------------------------------------------------------------- plan
def plan(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    source = app.inventory.host(str(ctx.inputs["host"])).name
    hosts = views(app)
    by_name = {v.name: v for v in hosts}
    if by_name[source].state in ("unreachable", Health.DOWN):
        raise EvacError(f"{source} is unreachable: a drain needs the host up (for a dead host, run host-failure)")
    drain = plan_drain(hosts, source, policy(ctx.inputs), chooser(app))
    for warning in drain.warnings:
        ctx.progress(f"warning: {warning}")
    result = drain.as_dict()
    result["moves"] = planned_moves(drain.moves, by_name[source].guests)
    return result


def planned_moves(moves: Iterable[Move], guests: Iterable[Guest]) -> list[dict[str, Any]]:
    """A plan's moves as the migrate step takes them: each with its strategy and its disks."""
    disks = {g.name: [d.path for d in g.disks] for g in guests}
    return [
        {**asdict(m), "strategy": "live + storage copy" if m.local_disks else "live", "disks": disks[m.guest]}
        for m in moves
    ]


# ---------------------------------------------------------------- verify
def verify(ctx: StepContext) -> Mapping[str, Any]:
    """Running on the target, persistent there, undefined on the source (`virsh list --all` on
    each), then whatever plugins check of a landed guest (``evac_verify_guest``)."""
    app = app_of(ctx)
    name = str(ctx.inputs["guest"])
    target = app.inventory.host(str(ctx.inputs["target"]))
    source = app.inventory.host(str(ctx.inputs["source"]))
    hosts = current()
    with hosts.use(target) as hv:
        try:
            guest = hv.guest(name, app.inventory.is_shared)
        except NotFound:
            raise EvacError(f"{name}: not defined on {target.name}") from None
    if guest.state != "running" or not guest.persistent:
        raise EvacError(f"{name} on {target.name}: state {guest.state}, persistent {guest.persistent}")
    with hosts.use(source) as hv:
        if hv.has_guest(name):
            raise EvacError(f"{name}: still defined on {source.name}")
    answers = app.pm.hook.evac_verify_guest(guest=guest, host=target, app=app)
    reasons = [str(reason) for reason in answers if reason is not None]
    if reasons:
        raise EvacError("; ".join(reasons))
    return {"guest": name, "host": target.name, "state": guest.state, "persistent": guest.persistent}


# ---------------------------------------------------------------- report
def move_rows(
    planned: Mapping[str, Any], migrated: Mapping[str, Any], moved: str = "moved", would: str = "would move"
) -> list[dict[str, Any]]:
    """One report row per planned move, from the plan step's and the migrate step's outputs:
    ``moved`` with its numbers, ``would`` in a dry run, or failed and why. The drain's, the
    return's and the rebalance's reports all start from these rows."""
    rows: list[dict[str, Any]] = []
    for move in planned.get("moves", []):
        row = {"guest": move["guest"], "memory_mib": move["memory_mib"], "from": move["source"]}
        done = migrated.get("items", {}).get(move["guest"])
        if done and done.get("planned"):
            rows.append({**row, "to": done["target"], "result": would, "detail": move.get("reason", "")})
        elif done:
            numbers = {k: done.get(k) for k in ("seconds", "downtime_ms", "bytes", "escalations")}
            seen = done.get("outage") or {}
            rows.append({**row, "to": done["target"], "result": moved, "detail": "", **numbers})
            rows[-1]["unanswered_s"] = seen.get("longest_gap_s")
        else:
            error = migrated.get("failed", {}).get(move["guest"], "not migrated (job stopped)")
            rows.append({**row, "to": "", "result": "failed", "detail": error})
    return rows


def report(ctx: StepContext) -> Mapping[str, Any]:
    """Every guest of the drain with where it went and how, or why it did not.

    Raises when guests remain on the host, so a drain never reports success early.
    """
    host = str(ctx.inputs["host"])
    planned = ctx.inputs.get("plan") or {}
    migrated = ctx.inputs.get("migrate") or {}
    rows = move_rows(planned, migrated)
    for stuck in planned.get("unplaceable", []):
        row = {"guest": stuck["guest"], "memory_mib": stuck["memory_mib"], "from": host}
        rows.append({**row, "to": "", "result": "unplaceable", "detail": stuck["reason"]})
    left = [r["guest"] for r in rows if r["result"] not in ("moved", "would move")]
    summary = f"{host}: {len(rows) - len(left)} of {len(rows)} guests moved"
    ctx.progress(summary + (f"; left on {host}: {', '.join(left)}" if left else ""))
    outputs = {"host": host, "rows": rows, "summary": summary}
    if left and not ctx.dry_run:
        raise Incomplete(f"{summary}; {len(left)} still on {host}: {', '.join(left)}", outputs)
    return outputs


@hookimpl
def evac_actions() -> list[Action]:
    return [
        Action(
            "host.disable",
            disable,
            plan=lambda ctx: {"would_disable": ctx.inputs["host"]},
            description="Put a host in maintenance: it takes no guests and is not failed over.",
            inputs=("host", "reason"),
            required=("host",),
        ),
        Action(
            "host.enable",
            enable,
            plan=lambda ctx: {"would_enable": ctx.inputs["host"]},
            description="Take a host out of maintenance (it must answer; a fenced one is cleaned first).",
            inputs=("host",),
            required=("host",),
        ),
        Action(
            "host.restore",
            restore,
            plan=lambda ctx: {"would_restore": ctx.inputs["host"]},
            description="Put a host back as host.disable found it (a drain's rollback).",
            inputs=("host", "before"),
            required=("host",),
        ),
        Action(
            "vm.plan_drain",
            plan,
            plan=plan,
            description="Plan where every running guest of a host goes (pure placement).",
            inputs=("host", "memory_overcommit", "cpu_overcommit", "headroom_mib"),
            required=("host",),
        ),
        Action(
            "vm.verify",
            verify,
            plan=lambda ctx: {"would_verify": ctx.inputs["guest"]},
            description=(
                "Check a guest runs on its target, persistent, and is gone from its source;"
                " then what plugins check of it (evac_verify_guest)."
            ),
            inputs=("guest", "target", "source"),
            required=("guest", "target", "source"),
        ),
        Action(
            "report.drain",
            report,
            plan=report,
            description="The drain's final report; fails while guests remain on the host.",
            inputs=("host", "plan", "migrate"),
            required=("host", "plan"),
        ),
    ]
