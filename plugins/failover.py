"""Host-failure actions: confirm the host is down, fence it, restart its guests elsewhere.

The order is the safety: nothing restarts until ``host.fence`` confirmed the power is
off (or an operator confirmed it by hand). Guest definitions come from evac's last
snapshot in the journal, since the dead host cannot be asked.

The other hosts are reached through the job's connections (``evac.connections``): opened,
and their bridges read, in the background while the dead host is confirmed down and
fenced, then reused by the plan and by every guest's "not running anywhere" check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from evac import Action, StepContext, hookimpl
from evac.appview import AppView
from evac.connections import current
from evac.domainxml import parse_guest, with_bridges
from evac.errors import Cancelled, DiskInUse, EvacError, FencingError, Incomplete, TransientError
from evac.events import Event
from evac.evidence import MonitorSettings
from evac.fencing import fence_host
from evac.fleet import answers, reachable, survey
from evac.model import Guest
from evac.monitor import doubts
from evac.networks import guest_renames
from evac.placement import place
from evac.states import EventKind, HostMode
from evac.stormbrake import holds_back

from .drain import app_of, fleet, policy

GONE = ("shutoff", "crashed")  # no QEMU left; every other state still runs one


def confirm_down(ctx: StepContext) -> Mapping[str, Any]:
    """Evac's own check: an alert or a monitor's word is a signal, not proof. The other
    hosts are reached meanwhile, for the steps after the fence."""
    app = app_of(ctx)
    spec = app.inventory.host(str(ctx.inputs["host"]))
    fenced = {h for h, s in app.journal.host_states().items() if s.state == HostMode.FENCED}
    threading.Thread(
        target=survey,
        args=(app.inventory, current()),
        kwargs={"skip": fenced | {spec.name}},
        daemon=True,
        name=f"reach-survivors-{spec.name}",
    ).start()
    checks = max(1, int(ctx.inputs.get("checks", 2)))  # never none
    for attempt in range(checks):
        if answers(spec, timeout=0.3):
            raise EvacError(f"{spec.name} answers (check {attempt + 1} of {checks}): not down, nothing to do")
        if attempt + 1 < checks:
            ctx.abort.wait(float(ctx.inputs.get("interval", 0.1)))
            ctx.check_abort()
    return {"host": spec.name, "down": True, "checks": checks}


def fence(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    spec = app.inventory.host(str(ctx.inputs["host"]))
    state = app.journal.host_states().get(spec.name)
    if state and state.state == HostMode.FENCED:
        return {"host": spec.name, "method": "already fenced", "by": state.actor, "seconds": 0}
    wait_for_doubts(ctx, app, spec.name)
    stop_if_braked(ctx, app, spec.name)
    try:
        result = fence_host(
            app.pm, spec, confirm_timeout=float(ctx.inputs.get("confirm_timeout", 30)), guard=ctx.guard, app=app
        )
    except FencingError as exc:
        ctx.progress(f"ALERT: {exc}", level="alert", kind="fence_failed", host=spec.name)
        app.journal.audit(f"job:{ctx.job_id}", "fence.failed", spec.name, {"error": str(exc)})
        raise
    for attempt in result.attempts:
        if not attempt.ok:
            ctx.progress(f"fence method {attempt.method} failed: {attempt.detail}")
    app.journal.set_host_state(spec.name, HostMode.FENCED, f"fenced by {result.method}", f"job:{ctx.job_id}")
    app.journal.audit(f"job:{ctx.job_id}", "fence", spec.name, {"method": result.method, "seconds": result.seconds})
    ctx.progress(f"{spec.name} fenced by {result.method} in {result.seconds:.2f} s")
    return {"host": spec.name, "method": result.method, "seconds": round(result.seconds, 3)}


def wait_for_doubts(ctx: StepContext, app: AppView, host: str) -> None:
    """Before the fence, wait (up to ``MonitorSettings.settle_max``) while this process's
    monitor is in doubt about other hosts: one that turned suspect after this failover
    started may be failing with it, and its storm-brake count is what the brake check
    after this wait must see. Nothing to wait for when the host failed alone."""
    deadline = time.monotonic() + MonitorSettings.settle_max
    told = False
    while (others := doubts(app, host)) and time.monotonic() < deadline:
        if not told:
            ctx.progress(f"waiting before the fence: {', '.join(others)} in doubt too")
            told = True
        ctx.abort.wait(0.05)
        ctx.check_abort()


def stop_if_braked(ctx: StepContext, app: AppView, host: str) -> None:
    """The storm brake, read again right before the fence: hosts failing together are seen
    up to about a second apart, so the brake may engage for the second one while the first
    one's failover already runs. Then the fence is not pressed and the job ends cancelled,
    as the monitor's braked failovers end (with the same event); releasing the brake fails
    the host over again."""
    job = app.journal.job(ctx.job_id)
    held = app.journal.brake()
    if job is None or held is None or not holds_back(held, job.created):
        return
    message = f"{host} not failed over: {held.reason}"
    ctx.emit(Event(EventKind.MONITOR_STORM_BRAKE, 0, item=host, message=message, data={"host": host}))
    raise Cancelled(f"{host} not fenced: the storm brake engaged after its failover started ({held.reason})")


def snapshot_guests(app: AppView, host: str) -> list[Guest]:
    return [
        parse_guest(xml, host, "running", True, app.inventory.is_shared)
        for xml in app.journal.definitions(host).values()
    ]


def plan_restart(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    host = app.inventory.host(str(ctx.inputs["host"])).name
    taken = app.journal.snapshot_taken(host)
    if taken is None:
        message = (
            f"ALERT: evac has no snapshot of what ran on {host} (no evac process reached {host} since this "
            f"journal began), so nothing was restarted. Find its guests (disks on shared storage) and start "
            f"them elsewhere by hand; `evac serve` snapshots every host it can reach, from its start on"
        )
        ctx.progress(message, level="alert", kind="no_snapshot", host=host)
        raise EvacError(message.removeprefix("ALERT: "))
    guests = snapshot_guests(app, host)
    lost = [g for g in guests if g.local_disks]
    movable = [g for g in guests if not g.local_disks]
    moves, stuck = place(movable, host, fleet(app), policy(ctx.inputs))
    unrecoverable = [
        {
            "guest": g.name,
            "memory_mib": g.memory_mib,
            "reason": f"local disk(s) {', '.join(d.target for d in g.local_disks)} died with {host}",
        }
        for g in lost
    ]
    unrecoverable += [{"guest": u.guest, "memory_mib": u.memory_mib, "reason": u.reason} for u in stuck]
    return {
        "host": host,
        "moves": [
            {
                "guest": m.guest,
                "target": m.target,
                "priority": m.priority,
                "memory_mib": m.memory_mib,
                "reason": m.reason,
            }
            for m in moves
        ],
        "unrecoverable": unrecoverable,
        "snapshot_guests": len(guests),
        "snapshot_age": round(max(0.0, time.time() - taken), 1),
    }


def running_somewhere(app: AppView, name: str, skip: str) -> str | None:
    """The host where ``name``'s QEMU is alive (any state but shut off or crashed), asked
    through the job's connections. A host whose libvirt port does not answer is not
    counted (it is off or cut off; the fence and the lock manager cover it). One that
    answers but cannot be asked, even on a fresh connection, is a ``TransientError``: a
    stale connection or a wedged libvirtd must never make a running guest look absent."""
    hosts = current()
    for spec in app.inventory.hosts:
        if spec.name == skip or not reachable(spec.uri, 0.5):
            continue
        for last in (False, True):
            try:
                with hosts.use(spec) as hv:
                    if hv.has_guest(name) and hv.guest(name).state not in GONE:
                        return spec.name
                break
            except EvacError as exc:
                if last:
                    raise TransientError(
                        f"{name}: cannot tell whether it runs on {spec.name}, which answers but not "
                        f"to libvirt ({exc}); not started anywhere meanwhile"
                    ) from None
    return None


def restart(ctx: StepContext) -> Mapping[str, Any]:
    """Define and start one guest on its target; never if it already runs anywhere."""
    app = app_of(ctx)
    failed = str(ctx.inputs["host"])
    name = str(ctx.inputs["guest"])
    target = app.inventory.host(str(ctx.inputs["target"]))
    state = app.journal.host_states().get(failed)
    if not state or state.state != HostMode.FENCED:
        raise FencingError(f"{name}: {failed} is not fenced; refusing to start its guest elsewhere")
    already = running_somewhere(app, name, skip=failed)
    if already:
        return {"guest": name, "target": already, "already": True, "seconds": 0}
    xml = app.journal.definitions(failed).get(name)
    if xml is None:
        raise EvacError(f"{name}: no definition of it in evac's snapshot of {failed}")
    snapshot = parse_guest(xml, failed, "shutoff", True, app.inventory.is_shared)
    xml = with_bridges(xml, guest_renames(snapshot, app.inventory.host(failed).networks, target.networks))
    started = time.monotonic()
    with current().use(target) as hv:
        ctx.guard()  # before the definition too: a deposed owner must not touch the target at all
        defined_here = not hv.has_guest(name)
        if defined_here:
            hv.define(xml)
        try:
            ctx.guard()
            hv.start(name)
        except EvacError as exc:
            if defined_here:  # no shut-off copy left behind on a second host
                hv.undefine(name)
            if isinstance(exc, DiskInUse):
                raise DiskInUse(
                    f"{name}: not started on {target.name}: a disk is still held by another QEMU, so {failed} "
                    f"may still be running it although it was fenced ({exc})"
                ) from None
            raise
        guest = hv.guest(name)
    if guest.state != "running":
        raise EvacError(f"{name} on {target.name}: {guest.state} after start")
    return {"guest": name, "target": target.name, "seconds": round(time.monotonic() - started, 3)}


def report(ctx: StepContext) -> Mapping[str, Any]:
    host = str(ctx.inputs["host"])
    planned = ctx.inputs.get("plan") or {}
    restarted = ctx.inputs.get("restart") or {}
    rows = []
    for move in planned.get("moves", []):
        done = restarted.get("items", {}).get(move["guest"])
        error = restarted.get("failed", {}).get(move["guest"], "not started (job stopped)")
        rows.append(
            {
                "guest": move["guest"],
                "priority": move["priority"],
                "to": done["target"] if done else "",
                "result": "restarted" if done else "failed",
                "detail": "" if done else error,
            }
        )
    for lost in planned.get("unrecoverable", []):
        rows.append(
            {"guest": lost["guest"], "priority": 0, "to": "", "result": "unrecoverable", "detail": lost["reason"]}
        )
    ok = sum(1 for r in rows if r["result"] == "restarted")
    fenced = (ctx.inputs.get("fence") or {}).get("method")
    failed = f"{host} failed, fenced by {fenced}" if fenced else f"{host} failed"
    known, age = planned.get("snapshot_guests", len(rows)), planned.get("snapshot_age")
    seen = f"{known} guest(s) known from a snapshot {age} s old" if age is not None else f"{known} guest(s) known"
    if rows:
        summary = f"{failed}: {ok} of {len(rows)} guests restarted elsewhere ({seen})"
    else:
        summary = f"{failed}: it ran no guests, nothing to restart ({seen})"
    ctx.progress(summary)
    outputs = {
        "host": host,
        "fenced_by": fenced or "",
        "rows": rows,
        "summary": summary,
        "snapshot_guests": known,
        "snapshot_age": age,
    }
    if ok < len(rows) and not ctx.dry_run:
        raise Incomplete(summary, outputs)
    return outputs


@hookimpl
def evac_actions() -> list[Action]:
    return [
        Action(
            "host.confirm_down",
            confirm_down,
            plan=lambda ctx: {"would_confirm_down": ctx.inputs["host"]},
            description="Check for itself that a host does not answer (libvirt, SSH), several times.",
            inputs=("host", "checks", "interval"),
            required=("host",),
        ),
        Action(
            "host.fence",
            fence,
            plan=lambda ctx: {"would_fence": ctx.inputs["host"]},
            description="Power a host off by its fence chain and confirm it is off.",
            inputs=("host", "confirm_timeout"),
            required=("host",),
        ),
        Action(
            "vm.plan_restart",
            plan_restart,
            plan=plan_restart,
            description="Targets for a dead host's guests from evac's snapshot, highest priority first.",
            inputs=("host", "memory_overcommit", "cpu_overcommit", "headroom_mib"),
            required=("host",),
        ),
        Action(
            "vm.restart",
            restart,
            plan=lambda ctx: dict(ctx.inputs, planned=True),
            description="Define and start a fenced host's guest on another host, unless it runs somewhere.",
            inputs=("host", "guest", "target", "priority", "memory_mib", "reason"),
            required=("host", "guest", "target"),
        ),
        Action(
            "report.failover",
            report,
            plan=report,
            description="The failover's final report; fails while guests are not running again.",
            inputs=("host", "plan", "restart", "fence"),
            required=("host", "plan"),
        ),
    ]
