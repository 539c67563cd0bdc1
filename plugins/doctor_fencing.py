"""Doctor check ``fencing``: every method in a host's chain answers, with working credentials.

A fence chain is only tested for real when a host dies, which is the worst moment to learn
that a BMC password changed. The check asks each method for the power state (the agent's
``power_state()``: no power action) and expects ``on``: ``unknown`` means the BMC did not
answer or refused the credentials, and ``off`` while the host's libvirtd answers means the
entry controls some other machine, which is worse than no fence at all.

With ``--power-cycle-test``, and only on a host in maintenance (``evac host disable``), the
first method really powers the host off and evac confirms it off. Powering on is not part
of the fence API: an agent that happens to have ``power_on()`` is asked to, otherwise the
finding says to power the host on by hand (in the lab: ``evac lab start-host HOST``).
"""

from __future__ import annotations

import threading
import time

from evac.doctor import DoctorContext, Finding, Result, one_line
from evac.fencing import FenceAgent, agent_for
from evac.fleet import reachable
from evac.inventory import HostSpec
from evac.states import HostMode

CONFIRM_SECONDS = 30.0


def wait_for_state(agent: FenceAgent, wanted: str, timeout: float = CONFIRM_SECONDS) -> str:
    """Poll the agent's power state until it reads ``wanted`` or the deadline passes; the last reading."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    state = agent.power_state()
    while state != wanted and time.monotonic() < deadline:
        pause.wait(0.5)
        state = agent.power_state()
    return state


def power_cycle(ctx: DoctorContext, host: HostSpec) -> Finding:
    """Off (confirmed) and, where the agent can, on again: only for a host in maintenance."""
    mode = ctx.app.journal.host_states().get(host.name)
    if mode is None or mode.state != HostMode.MAINTENANCE:
        return Finding(
            Result.WARN,
            "power cycle not run: the host is not in maintenance",
            f"evac host disable {host.name}, drain it, then run evac doctor {host.name} --power-cycle-test",
        )
    spec = host.fence[0]
    agent = agent_for(ctx.app.pm, host, spec, ctx.app)
    agent.power_off()
    state = wait_for_state(agent, "off")
    if state != "off":
        return Finding(
            Result.FAIL,
            f"power cycle: {spec.method} was told off but reads '{state}' after {CONFIRM_SECONDS:g} s",
            f"fix fence[0] ({spec.method}) of {host.name}: evac would not count this fence",
        )
    power_on = getattr(agent, "power_on", None)
    if not callable(power_on):
        return Finding(
            Result.WARN,
            f"power cycle: {spec.method} powered the host off and read back 'off'; the fence API has no "
            "power on, so the host stays off",
            f"power {host.name} on by hand (in the lab: evac lab start-host {host.name})",
        )
    power_on()
    state = wait_for_state(agent, "on")
    if state != "on":
        return Finding(
            Result.WARN,
            f"power cycle: off confirmed; after power on {spec.method} reads '{state}'",
            f"check {host.name}'s console and power it on by hand",
        )
    return Finding(Result.PASS, f"power cycle: {spec.method} powered the host off (confirmed) and on again")


def check_fencing(ctx: DoctorContext, host: HostSpec) -> Finding:
    if not host.fence:
        return Finding(
            Result.FAIL,
            "no fence methods: evac can never confirm this host off, so its guests are never restarted elsewhere",
            f"add a fence: chain (redfish, agent, ...) to host {host.name} in {ctx.app.inventory.source}",
        )
    answers: list[str] = []
    problems: list[str] = []
    alive = reachable(host.uri, timeout=1.0)
    for index, spec in enumerate(host.fence):
        label = f"fence[{index}] {spec.method}"
        try:
            state = agent_for(ctx.app.pm, host, spec, ctx.app).power_state()
        except Exception as exc:  # a plugin's error, whatever its class, is this method failing
            problems.append(f"{label}: {one_line(exc)}")
            continue
        answers.append(f"{label}: {state}")
        if state == "unknown":
            problems.append(f"{label} answered 'unknown' (BMC unreachable or credentials refused)")
        elif state == "off" and alive:
            problems.append(f"{label} says 'off' while the host's libvirtd answers: it controls another machine?")
        elif state not in ("on", "off"):
            problems.append(f"{label} answered {state!r}, not on/off")
    said = "; ".join(answers) or "no method answered"
    if problems:
        return Finding(
            Result.FAIL,
            f"{'; '.join(problems)} (answers: {said})",
            f"fix the address and credentials of the failing entries of {host.name}'s fence chain",
        )
    evidence = f"status only, no power action: {said}"
    if not ctx.power_cycle_test:
        return Finding(Result.PASS, evidence + " (credentials work; power off itself not exercised)")
    cycled = power_cycle(ctx, host)
    return Finding(cycled.result, f"{evidence}; {cycled.evidence}", cycled.fix)
