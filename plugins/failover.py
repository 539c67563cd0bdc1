"""Host-failure actions: confirm the host is down, fence it, restart its guests elsewhere.

The order is the safety: nothing restarts until ``host.fence`` confirmed the power is
off (or an operator confirmed it by hand). Guest definitions come from evac's last
snapshot in the journal, since the dead host cannot be asked.

The other hosts are reached through the job's connections (``evac.connections``): opened,
and their bridges read, in the background while the dead host is confirmed down and
fenced, then reused by the plan and by every guest's "not running anywhere" check.

Only guests that are HA members (``Guest.rules.protected``: their ``ha-protected``
metadata, else their tags' ``protect``, else ``guests.protect``) are restarted; the others
are listed as left stopped, which is not a failure. The plan orders the restarts by
``after`` rules and priority (:mod:`evac.restartorder`), and each restart first waits,
up to ``after_timeout``, until what it comes after is ready (docs/restart-order.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evac import Action, StepContext, hookimpl
from evac.appview import AppView
from evac.connections import current
from evac.domainxml import parse_guest, with_bridges
from evac.errors import Cancelled, DiskInUse, EvacError, FencingError, Incomplete, TransientError
from evac.events import Event
from evac.evidence import MonitorSettings
from evac.fencing import fence_host
from evac.fleet import answers, reachable, survey, views
from evac.guestrules import GuestSettings, resolve
from evac.hypervisor import Hypervisor
from evac.model import Guest, Readiness
from evac.monitor import doubts
from evac.networks import guest_renames
from evac.placement import place
from evac.reachability import Kind, OutageWatch, Reachability
from evac.restartorder import (
    DEFAULT_AFTER_TIMEOUT,
    Dependency,
    Look,
    Seen,
    Waited,
    after_source,
    await_ready,
    has_agent_channel,
    plan_order,
)
from evac.states import EventKind, HostMode, ItemState
from evac.stormbrake import holds_back

from .drain import app_of, policy
from .migrate import locate

GONE = ("shutoff", "crashed")  # no QEMU left; every other state still runs one
LEFT_STOPPED = "not protected: left stopped"
WAIT_EVERY = 0.2  # seconds between looks at what a restart waits for
SEARCH_EVERY = 2.0  # seconds between searches of every host for a waited-for guest that moved
ECHO_EVERY = 0.1  # seconds between echoes to a guest others wait for


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
    stop_if_disarmed(ctx, app, spec.name)
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


def stop_if_disarmed(ctx: StepContext, app: AppView, host: str) -> None:
    """HA disarmed after this failover began: the fence is not pressed, as with the brake.
    A failover started while disarmed is an operator's (the monitor starts none) and goes
    ahead; arming again fails the host over."""
    job = app.journal.job(ctx.job_id)
    held = app.journal.disarmed()
    if job is None or held is None or not holds_back(held, job.created):
        return
    message = f"HA disarmed: {host} not failed over ({held.reason})"
    ctx.emit(Event(EventKind.HA_HELD, 0, item=host, message=message, data={"host": host, "level": "alert"}))
    raise Cancelled(f"{host} not fenced: HA was disarmed after its failover started ({held.reason})")


def snapshot_guests(app: AppView, host: str) -> list[Guest]:
    """The dead host's guests from evac's last snapshot, with their rules resolved."""
    settings = GuestSettings.of(app.settings.sections)
    return [resolve(g, settings) for g in defined_guests(app, host)]


def defined_guests(app: AppView, host: str) -> list[Guest]:
    """The dead host's guests as their definitions say, before the ``guests:`` rules."""
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
    settings = GuestSettings.of(app.settings.sections)
    definitions = app.journal.definitions(host)
    raw = defined_guests(app, host)
    guests = [resolve(g, settings) for g in raw]
    members = [g for g in guests if g.rules.protected]
    left = [g for g in guests if not g.rules.protected]
    lost = [g for g in members if g.local_disks]
    movable = [g for g in members if not g.local_disks]
    hosts = views(app)
    moves, stuck = place(movable, host, hosts, policy(ctx.inputs))
    unrecoverable: list[dict[str, Any]] = [
        {
            "guest": g.name,
            "memory_mib": g.memory_mib,
            "reason": f"local disk(s) {', '.join(d.target for d in g.local_disks)} died with {host}",
        }
        for g in lost
    ]
    unrecoverable += [{"guest": u.guest, "memory_mib": u.memory_mib, "reason": u.reason} for u in stuck]
    by_name = {g.name: g for g in guests}
    skipped = {g.name: (g, LEFT_STOPPED) for g in left}
    skipped |= {u["guest"]: (by_name[u["guest"]], f"unrecoverable: {u['reason']}") for u in unrecoverable}
    order = plan_order(
        [by_name[m.guest] for m in moves],
        elsewhere=[g for view in hosts if view.name != host for g in view.guests],
        not_restarted=skipped,
        sources={g.name: after_source(g, settings) for g in raw},
        without_agent=[name for name, xml in definitions.items() if not has_agent_channel(xml)],
    )
    for warning in order.warnings:
        ctx.progress(f"restart order: {warning}", level="warning", kind="restart_order")
    placed = {m.guest: m for m in moves}
    return {
        "host": host,
        "moves": [
            {
                "guest": o.guest,
                "target": placed[o.guest].target,
                "priority": placed[o.guest].priority,
                "memory_mib": placed[o.guest].memory_mib,
                "reason": placed[o.guest].reason,
                "wave": o.wave,
                "after": list(o.after),
                "ready": str(by_name[o.guest].rules.ready or Readiness.STARTED),
            }
            for o in order.order
        ],
        "waits": {name: dep.as_dict() for name, dep in order.waits.items()},
        "unrecoverable": unrecoverable,
        "left_stopped": [{"guest": g.name, "memory_mib": g.memory_mib, "reason": LEFT_STOPPED} for g in left],
        "warnings": list(order.warnings),
        "snapshot_guests": len(guests),
        "snapshot_age": round(max(0.0, time.time() - taken), 1),
    }


@dataclass(frozen=True)
class Whereabouts:
    """Where a guest's QEMUs are, on every host that answers but one."""

    running: str | None = None  # a host whose QEMU may run it: any state but shut off, crashed, or the next
    stranded: tuple[str, ...] = ()  # hosts holding it paused as a post-copy migration's source
    unanswered: tuple[str, ...] = ()  # hosts whose libvirt port did not answer: it may run there


def whereabouts(app: AppView, name: str, skip: str) -> Whereabouts:
    """Where ``name``'s QEMUs are, asked through the job's connections. A host whose libvirt
    port does not answer is not counted (it is off or cut off; the fence and the lock
    manager cover it). One that answers but cannot be asked, even on a fresh connection, is
    a ``TransientError``: a stale connection or a wedged libvirtd must never make a running
    guest look absent. A copy paused as a post-copy migration's source is not the guest:
    the guest ran at the destination, and died with it when that was the failed host."""
    hosts = current()
    stranded, unanswered = [], []
    for spec in app.inventory.hosts:
        if spec.name == skip:
            continue
        if not reachable(spec.uri, 0.5):
            unanswered.append(spec.name)
            continue
        for last in (False, True):
            try:
                with hosts.use(spec) as hv:
                    if hv.has_guest(name) and hv.guest(name).state not in GONE:
                        if not hv.postcopy_source(name):
                            return Whereabouts(running=spec.name)
                        stranded.append(spec.name)
                break
            except EvacError as exc:
                if last:
                    raise TransientError(
                        f"{name}: cannot tell whether it runs on {spec.name}, which answers but not "
                        f"to libvirt ({exc}); not started anywhere meanwhile"
                    ) from None
    return Whereabouts(stranded=tuple(stranded), unanswered=tuple(unanswered))


def running_somewhere(app: AppView, name: str, skip: str) -> str | None:
    """The host where ``name``'s QEMU is alive (see :func:`whereabouts`)."""
    found = whereabouts(app, name, skip)
    return found.running or (found.stranded[0] if found.stranded else None)


def restart(ctx: StepContext) -> Mapping[str, Any]:
    """Define and start one guest on its target; never if it already runs anywhere."""
    app = app_of(ctx)
    failed = str(ctx.inputs["host"])
    name = str(ctx.inputs["guest"])
    target = app.inventory.host(str(ctx.inputs["target"]))
    state = app.journal.host_states().get(failed)
    if not state or state.state != HostMode.FENCED:
        raise FencingError(f"{name}: {failed} is not fenced; refusing to start its guest elsewhere")
    waited = wait_for_dependencies(ctx, app)
    told = {"after": list(ctx.inputs.get("after") or []), "waited_s": waited.seconds, "waited": waited.note}
    found = whereabouts(app, name, skip=failed)
    if found.running:
        return {"guest": name, "target": found.running, "already": True, "seconds": 0, **told}
    fenced = {h for h, st in app.journal.host_states().items() if st.state == HostMode.FENCED}
    if found.stranded and set(found.unanswered) - fenced:  # its post-copy destination may live there
        silent = ", ".join(sorted(set(found.unanswered) - fenced))
        raise TransientError(
            f"{name}: paused as a post-copy source on {', '.join(found.stranded)}, and {silent} does not answer"
            " (the guest may run there): not restarted meanwhile"
        )
    for host in found.stranded:  # found by the nemesis: counted as running, it was never restarted
        with current().use(app.inventory.host(host)) as hv:
            ctx.guard()
            hv.destroy(name)
            if host != target.name:  # no second definition left behind
                hv.undefine(name)
        ctx.progress(f"{name}: destroyed its paused post-copy source on {host}: the copy it ran died with {failed}")
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
    return {"guest": name, "target": target.name, "seconds": round(time.monotonic() - started, 3), **told}


def wait_for_dependencies(ctx: StepContext, app: AppView) -> Waited:
    """Wait until every guest this one comes ``after`` is ready, up to ``after_timeout``
    seconds; then start anyway (as vSphere does), and the outputs say so. A retry of the
    same restart looks once and does not wait again."""
    waits = ctx.inputs.get("waits") or {}
    deps = [Dependency.of(waits[n]) for n in ctx.inputs.get("after") or [] if n in waits]
    if not deps:
        return Waited(0.0)
    timeout = float(ctx.inputs.get("after_timeout", DEFAULT_AFTER_TIMEOUT)) if ctx.attempt == 1 else 0.0
    name = str(ctx.inputs["guest"])
    ctx.progress(f"{name} waits for {', '.join(f'{d.guest} ({d.ready})' for d in deps)}, up to {timeout:g} s")

    def pause(seconds: float) -> None:
        ctx.abort.wait(seconds)
        ctx.check_abort()

    with ReadinessChecks(ctx, app) as check:
        waited = await_ready(deps, check, pause, time.monotonic, timeout, WAIT_EVERY)
    if waited.note:
        ctx.progress(f"{name}: {waited.note}", level="warning")
    elif waited.ready:
        ctx.progress(f"{name}: {', '.join(waited.ready)} ready after {waited.seconds:g} s")
    return waited


class ReadinessChecks:
    """Looks at the guests one restart waits for: a guest this plan restarts through its
    restart item (not finished: not ready; failed: not waited for any more), then where it
    runs; an echo through one watch per guest, kept for the whole wait.

    A guest is first looked for where the plan (or its restart) put it. A drain or a
    return may move it meanwhile (the nemesis, seed 2122160409, held a restart 78 s so), so
    one that is not there is searched for on every host, once per ``SEARCH_EVERY``."""

    def __init__(self, ctx: StepContext, app: AppView, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.app = app
        self.clock = clock
        self.watches: dict[str, OutageWatch | None] = {}
        self.moved: dict[str, str] = {}  # guest -> the host a search found it on
        self.searched: dict[str, float] = {}  # guest -> when it was last searched for

    def __enter__(self) -> ReadinessChecks:
        return self

    def __exit__(self, *exc: object) -> None:
        for watch in self.watches.values():
            if watch is not None:
                watch.stop(drain=False)

    def __call__(self, dep: Dependency) -> Look:
        host = dep.host
        if dep.in_plan:
            record = self.app.journal.items(self.ctx.job_id, self.ctx.step).get(dep.guest)
            if record is None or record.state == ItemState.RUNNING:
                return Look(Seen.WAITING, "its restart has not finished")
            if record.state == ItemState.FAILED:
                return Look(Seen.GONE, f"its restart failed ({record.error})")
            host = str(record.outputs.get("target") or "")
        if dep.ready is Readiness.ECHO and dep.address:
            watch = self._watch(dep)
            if watch is not None:
                if watch.wait_for_answer(0) is not None:
                    return Look(Seen.READY, f"answers echo at {dep.address}")
                why = f"; last: {watch.log.error}" if watch.log.error else ""
                return Look(Seen.WAITING, f"no echo answer at {dep.address}{why}")
        return self._on_host(dep, host)

    def _watch(self, dep: Dependency) -> OutageWatch | None:
        """The guest's echo watch; None (and a warning, once) when echoes cannot be sent
        from here: then it counts as ready once it runs."""
        if dep.guest not in self.watches:
            assert dep.address is not None
            try:
                self.watches[dep.guest] = OutageWatch(Reachability(Kind.ICMP), dep.address, ECHO_EVERY, 1.0).start()
            except EvacError as exc:
                self.watches[dep.guest] = None
                told = f"{dep.guest}: its echo cannot be checked ({exc}); ready once it runs"
                self.ctx.progress(told, level="warning")
        return self.watches[dep.guest]

    def _on_host(self, dep: Dependency, host: str) -> Look:
        """The guest where it was last seen; when it is not there, where a search finds it."""
        host = self.moved.get(dep.guest, host)
        look = self._look(dep, host)
        if isinstance(look, Look):
            return look
        last = self.searched.get(dep.guest)
        if last is not None and self.clock() - last < SEARCH_EVERY:
            return Look(Seen.WAITING, look)
        self.searched[dep.guest] = self.clock()
        found = self._search(dep.guest, skip={host, str(self.ctx.inputs["host"])})
        if found is None:
            return Look(Seen.WAITING, look)
        self.moved[dep.guest] = found
        again = self._look(dep, found)
        return again if isinstance(again, Look) else Look(Seen.WAITING, again)

    def _search(self, name: str, skip: set[str]) -> str | None:
        """A host where ``name`` runs, else one where it has a QEMU (the paused destination
        of a migration). A host that cannot be asked is passed over (:func:`locate`):
        unlike the check before a start, a miss here costs only a wait."""
        self.ctx.check_abort()
        hosts = [s for s in self.app.inventory.hosts if s.name not in skip and reachable(s.uri, 0.5)]
        found = locate(self.app, name, hosts)
        running = [h for h, g in found.items() if g.state == "running"]
        alive = [h for h, g in found.items() if g.state not in GONE]
        return next(iter(running or alive), None)

    def _look(self, dep: Dependency, host: str) -> Look | str:
        """How the guest is on ``host``; why it is not seen there, when it is not."""
        try:
            spec = self.app.inventory.host(host)
            with current().use(spec) as hv:
                if not hv.has_guest(dep.guest):
                    return f"not on {host}"
                state = hv.guest(dep.guest).state
                if state in GONE:
                    return f"{state} on {host}"
                if state != "running":
                    return Look(Seen.WAITING, f"{state} on {host}")
                if dep.ready is Readiness.AGENT:
                    return agent_answers(hv, dep.guest)
        except EvacError as exc:
            return str(exc)
        return Look(Seen.READY, f"runs on {host}")


def agent_answers(hv: Hypervisor, name: str) -> Look:
    """Whether the guest's QEMU guest agent answers a ``guest-ping``. A guest without an
    agent channel never will: it is not waited for."""
    answered = hv.agent_ping(name)
    if answered is None:
        return Look(Seen.GONE, "has no guest agent channel")
    if not answered:
        return Look(Seen.WAITING, "its guest agent does not answer")
    return Look(Seen.READY, "its guest agent answers")


def report(ctx: StepContext) -> Mapping[str, Any]:
    """The failover's outcome, one row per guest of the dead host, in restart order. Guests
    left stopped because they are not HA members are listed, and are not failures."""
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
                "wave": move.get("wave", 1),
                "after": move.get("after", []),
                "to": done["target"] if done else "",
                "result": "restarted" if done else "failed",
                "detail": (done.get("waited") or "") if done else error,
            }
        )
    for lost in planned.get("unrecoverable", []):
        rows.append(
            {"guest": lost["guest"], "priority": 0, "wave": None, "after": [], "to": ""}
            | {"result": "unrecoverable", "detail": lost["reason"]}
        )
    for left in planned.get("left_stopped", []):
        rows.append(
            {"guest": left["guest"], "priority": 0, "wave": None, "after": [], "to": ""}
            | {"result": "left stopped", "detail": left["reason"]}
        )
    due = [r for r in rows if r["result"] != "left stopped"]
    ok = sum(1 for r in due if r["result"] == "restarted")
    fenced = (ctx.inputs.get("fence") or {}).get("method")
    failed = f"{host} failed, fenced by {fenced}" if fenced else f"{host} failed"
    known, age = planned.get("snapshot_guests", len(rows)), planned.get("snapshot_age")
    seen = f"{known} guest(s) known from a snapshot {age} s old" if age is not None else f"{known} guest(s) known"
    unprotected = len(rows) - len(due)
    seen += f", {unprotected} not protected: left stopped" if unprotected else ""
    if due:
        summary = f"{failed}: {ok} of {len(due)} guests restarted elsewhere ({seen})"
    elif rows:
        summary = f"{failed}: none of its guests is protected, nothing to restart ({seen})"
    else:
        summary = f"{failed}: it ran no guests, nothing to restart ({seen})"
    ctx.progress(summary)
    outputs = {
        "host": host,
        "fenced_by": fenced or "",
        "rows": rows,
        "summary": summary,
        "warnings": list(planned.get("warnings", [])),
        "snapshot_guests": known,
        "snapshot_age": age,
    }
    if ok < len(due) and not ctx.dry_run:
        raise Incomplete(summary, outputs)
    return outputs


def plan_one_restart(ctx: StepContext) -> Mapping[str, Any]:
    """What a restart would do: its target and what it would wait for (not the whole plan's waits)."""
    shown = {k: v for k, v in ctx.inputs.items() if k != "waits"}
    return dict(shown, planned=True)


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
            description=(
                "Targets for a dead host's protected guests from evac's snapshot, in restart order "
                "(after rules, then priority); unprotected guests are left stopped."
            ),
            inputs=("host", "memory_overcommit", "cpu_overcommit", "headroom_mib"),
            required=("host",),
        ),
        Action(
            "vm.restart",
            restart,
            plan=plan_one_restart,
            description=(
                "Define and start a fenced host's guest on another host, unless it runs somewhere; first wait "
                "(up to after_timeout s) until the guests it comes after are ready."
            ),
            inputs=("host", "guest", "target", "priority", "memory_mib", "reason", "after", "waits", "after_timeout"),
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
