"""Guest-failure actions: a guest whose QEMU died on a live host starts again, on its own
host or on another, and the job says which in one line.

``Jobs.guest_failed`` decides (:mod:`evac.restartpolicy`) and starts the ``guest-failure``
runbook; these are its steps. Neither start ever makes a second copy: a guest that runs
anywhere already is left alone, and a relocated guest leaves its old host only once it
runs on the new one. Each start is guarded (``ctx.guard()``): a controller that lost the
job does nothing. Also claims the ``ha:`` section of evac.yaml.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from evac import Action, StepContext, hookimpl
from evac.appview import AppView
from evac.domainxml import with_bridges
from evac.errors import EvacError, Incomplete
from evac.fleet import views
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec
from evac.jobs import host_flow
from evac.model import ACTIVE, Guest
from evac.networks import guest_renames
from evac.placement import place
from evac.restartpolicy import parse_ha
from evac.states import EventKind, StepState

from .drain import app_of, chooser, policy
from .failover import running_somewhere


def ours(app: AppView, host: str, name: str) -> None:
    """Right before a start: a host whose own flow took over (fenced, failed over) owns its guests."""
    owner = host_flow(app.journal, host, app.settings.runbooks.failover)
    if owner:
        raise EvacError(f"{name}: not started: {owner}, and that flow owns its guests")


def start_in_place(ctx: StepContext) -> Mapping[str, Any]:
    """Start the stopped guest again where it is; refused while it runs on another host."""
    app = app_of(ctx)
    spec = app.inventory.host(str(ctx.inputs["host"]))
    name = str(ctx.inputs["guest"])
    elsewhere = running_somewhere(app, name, skip=spec.name)
    if elsewhere:
        raise EvacError(f"{name} runs on {elsewhere}: not started again on {spec.name} (never two copies)")
    started = time.monotonic()
    with Hypervisor.connect(spec.name, spec.uri) as hv:
        if hv.guest(name).state in ACTIVE:
            return {"guest": name, "host": spec.name, "already": True, "seconds": 0}
        ctx.guard()
        hv.destroy(name)  # a panicked guest kept for inspection (on_crash: preserve) still holds its QEMU
        ours(app, spec.name, name)
        ctx.guard()
        hv.start(name)
        state = hv.guest(name).state
    if state != "running":
        raise EvacError(f"{name} on {spec.name}: {state} after start")
    seconds = round(time.monotonic() - started, 3)
    ctx.progress(f"{name} started again on {spec.name} in {seconds} s")
    return {"guest": name, "host": spec.name, "seconds": seconds}


def relocation(app: AppView, ctx: StepContext) -> tuple[HostSpec, Guest, str, HostSpec | None]:
    """The source, the guest, its definition and the target placement chooses for it
    (None when the guest runs on its source again: nothing to relocate)."""
    source = app.inventory.host(str(ctx.inputs["host"]))
    name = str(ctx.inputs["guest"])
    with Hypervisor.connect(source.name, source.uri) as hv:
        guest = hv.guest(name, app.inventory.is_shared)
        xml = hv.domain_xml(name, inactive=True)
    if guest.state in ACTIVE:
        return source, guest, xml, None
    if guest.local_disks:
        disks = ", ".join(d.target for d in guest.local_disks)
        raise EvacError(f"{name}: local disk(s) {disks} on {source.name}: it can only start there")
    moves, stuck = place([guest], source.name, views(app), policy(ctx.inputs), chooser(app))
    if not moves:
        raise EvacError(f"{name}: no host to relocate it to: {stuck[0].reason}")
    return source, guest, xml, app.inventory.host(moves[0].target)


def relocate(ctx: StepContext) -> Mapping[str, Any]:
    """Define the stopped guest on another host, start it there, then undefine it on its old host."""
    app = app_of(ctx)
    name = str(ctx.inputs["guest"])
    host = app.inventory.host(str(ctx.inputs["host"])).name
    elsewhere = running_somewhere(app, name, skip=host)
    if elsewhere:
        return {"guest": name, "source": host, "target": elsewhere, "already": True, "seconds": 0}
    source, guest, xml, target = relocation(app, ctx)
    if target is None:
        return {"guest": name, "source": host, "target": host, "already": True, "seconds": 0}
    xml = with_bridges(xml, guest_renames(guest, source.networks, target.networks))
    started = time.monotonic()
    if guest.state != "shutoff":  # a panicked guest kept for inspection still holds its QEMU and disks
        with Hypervisor.connect(source.name, source.uri) as old:
            ctx.guard()
            old.destroy(name)
    with Hypervisor.connect(target.name, target.uri) as hv:
        ctx.guard()  # before the definition too: a deposed owner must not touch the target at all
        known = hv.has_guest(name)
        hv.define(xml)
        try:
            with Hypervisor.connect(source.name, source.uri) as old:
                if old.guest(name).state in ACTIVE:  # started again meanwhile (by a person?): one copy is enough
                    raise EvacError(f"{name} runs on {source.name} again: not started on {target.name}")
            ours(app, source.name, name)
            ctx.guard()
            hv.start(name)
        except EvacError:
            if not known:  # no shut-off copy left behind on a second host
                hv.undefine(name)
            raise
        state = hv.guest(name).state
    if state != "running":
        raise EvacError(f"{name} on {target.name}: {state} after start; it is still defined on {source.name}")
    seconds = round(time.monotonic() - started, 3)
    outputs: dict[str, Any] = {"guest": name, "source": source.name, "target": target.name, "seconds": seconds}
    try:
        with Hypervisor.connect(source.name, source.uri) as old:
            old.undefine(name)
    except EvacError as exc:
        outputs["left_defined"] = f"its old definition on {source.name} is left ({exc}): undefine it there by hand"
        ctx.progress(f"ALERT: {name}: {outputs['left_defined']}", level="alert", host=source.name)
    ctx.progress(f"{name} relocated from {source.name} to {target.name} in {seconds} s")
    return outputs


def plan_relocate(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    source, _guest, _xml, target = relocation(app, ctx)
    where = target.name if target else source.name
    return {"guest": str(ctx.inputs["guest"]), "source": source.name, "target": where, "planned": True}


def report(ctx: StepContext) -> Mapping[str, Any]:
    """One line: restarted in place, relocated, or left stopped and why. Fails when the
    guest was left stopped, so the job does too."""
    guest, host = str(ctx.inputs["guest"]), str(ctx.inputs["host"])
    action, decision = str(ctx.inputs.get("action", "")), str(ctx.inputs.get("decision", ""))
    why = f" ({decision})" if decision else ""
    restarted = ctx.inputs.get("restart") or {}
    relocated = ctx.inputs.get("relocate") or {}
    if restarted.get("already") or relocated.get("already"):
        where = restarted.get("host") or relocated.get("target")
        summary = f"{guest} runs on {where} already: nothing to do"
    elif restarted:
        summary = f"{guest} restarted in place on {host}{why}"
    elif relocated:
        summary = f"{guest} relocated from {host} to {relocated['target']}{why}"
        if relocated.get("left_defined"):
            summary += f"; {relocated['left_defined']}"
    else:
        summary = f"{guest} left stopped on {host}: {action or 'recovery'} failed: {failure(ctx)}"
        ctx.progress(f"ALERT: {summary}", level="alert", host=host)
        raise Incomplete(summary, {"guest": guest, "host": host, "summary": summary})
    ctx.progress(summary)
    return {"guest": guest, "host": host, "summary": summary}


def failure(ctx: StepContext) -> str:
    """The error of this job's last failed step: the restart or the relocation."""
    if ctx.app is None:
        return "no error recorded"
    errors = [
        e.message
        for _, e in ctx.app.journal.events(ctx.job_id)
        if e.kind == EventKind.STEP_FINISHED and e.data.get("state") == StepState.FAILED and e.message
    ]
    return errors[-1] if errors else "no error recorded"


def plan_report(ctx: StepContext) -> Mapping[str, Any]:
    guest, host, action = str(ctx.inputs["guest"]), str(ctx.inputs["host"]), str(ctx.inputs.get("action", ""))
    return {"guest": guest, "host": host, "summary": f"would {action or 'recover'} {guest} on {host}"}


@hookimpl
def evac_config_sections() -> dict[str, Any]:
    return {"ha": parse_ha}


@hookimpl
def evac_actions() -> list[Action]:
    return [
        Action(
            "vm.start_in_place",
            start_in_place,
            plan=lambda ctx: {"would_start": ctx.inputs["guest"], "on": ctx.inputs["host"]},
            description="Start a guest whose QEMU died again on its own host, unless it runs anywhere.",
            inputs=("host", "guest"),
            required=("host", "guest"),
        ),
        Action(
            "vm.relocate",
            relocate,
            plan=plan_relocate,
            description="Start a stopped guest on another host (placement chooses), then undefine it on its own.",
            inputs=("host", "guest", "memory_overcommit", "cpu_overcommit", "headroom_mib"),
            required=("host", "guest"),
        ),
        Action(
            "report.guest_failure",
            report,
            plan=plan_report,
            description="One line on a guest's recovery; fails when the guest was left stopped.",
            inputs=("host", "guest", "action", "decision", "restart", "relocate"),
            required=("host", "guest"),
        ),
    ]
