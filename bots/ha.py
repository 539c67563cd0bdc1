"""``/evac ha``: HA armed or disarmed across the cluster, as ``evac ha`` says and does.

``status`` and ``capacity`` are read-only (the ``status`` rule, open unless a rule closes
it); ``disarm``
and ``arm`` need the ``ha`` rule and go through the front door (``Jobs.disarm``,
``Jobs.arm``), which audits them and announces them to every observer, the alerts
channel included. A change is said in the channel; a look or a no-op only to the asker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from evac.errors import EvacError
from evac.jobs import Actor
from evac.journal import Disarmed
from evac.restartpolicy import HaSettings
from evac.yamldoc import suggest

from .blocks import escape

if TYPE_CHECKING:
    from evac.app import App

READ_ONLY_HA = ("status", "capacity")
VERBS = ("status", "capacity", "disarm", "arm")
USAGE = "Usage: `/evac ha [status]`, `/evac ha capacity`, `/evac ha disarm [reason]`, `/evac ha arm`"
TABLE_ROWS = 30  # hosts in the capacity table; the CLI's `evac ha capacity` lists them all
EPHEMERAL, IN_CHANNEL = "ephemeral", "in_channel"
DISARMED_MEANS = f"{Disarmed.MEANS[0].upper()}{Disarmed.MEANS[1:]}. `/evacuate` still runs"
ARMED_MEANS = "automatic failover, guest restarts and the agents' self-fencing are on"


def ha_reply(evac: App, actor: Actor, args: list[str]) -> tuple[str, str]:
    """What ``/evac ha ARGS`` does and answers: ``(response_type, text)``."""
    verb = args[0] if args else "status"
    if verb == "status" and len(args) <= 1:
        return EPHEMERAL, status_text(evac.journal.disarmed())
    if verb == "capacity" and len(args) == 1:
        try:
            return EPHEMERAL, capacity_text(evac)
        except EvacError as exc:
            return EPHEMERAL, f"HA capacity not worked out: {exc}"
    if verb == "disarm":
        reason = " ".join(args[1:])
        try:
            done = evac.jobs.disarm(actor, reason)
        except EvacError as exc:
            return EPHEMERAL, f"HA not disarmed: {exc}"
        if not done:
            return EPHEMERAL, f"HA was disarmed already{since(evac.journal.disarmed())}: nothing changed."
        return IN_CHANNEL, (
            f"<@{actor.who}> disarmed HA: {escape(reason) or 'no reason given'}. {DISARMED_MEANS}. "
            "`/evac ha arm` resumes."
        )
    if verb == "arm" and len(args) == 1:
        held = evac.jobs.arm(actor)
        if held is None:
            return EPHEMERAL, "HA was armed already: nothing changed."
        return IN_CHANNEL, (
            f"<@{actor.who}> armed HA (disarmed{since(held)}): hosts down now are failed over, "
            "guests that died meanwhile are restarted, and agents self-fence again."
        )
    if verb in VERBS:
        return EPHEMERAL, USAGE
    return EPHEMERAL, f"Unknown `ha` command `{escape(verb[:40])}`{suggest(verb, VERBS)}. {USAGE}"


def status_text(held: Disarmed | None) -> str:
    if held is None:
        return f"HA: *armed*: {ARMED_MEANS}."
    return f":double_vertical_bar: HA: *disarmed*{since(held)}. {DISARMED_MEANS}. `/evac ha arm` resumes."


def capacity_text(evac: App) -> str:
    """What ``evac ha capacity`` says: host failures absorbed and why not one more, whether
    ``ha.reserve`` holds, what is protected, and each host's load, worst first."""
    from evac.protection import verdict  # the fleet surveyed as the CLI surveys it

    found = verdict(evac)
    report = found.report
    admission = HaSettings.of(evac.settings.sections).admission
    lines = [
        f"{':white_check_mark:' if found.holds else ':warning:'} HA capacity: {escape(report.summary())}",
        f"{escape(found.why)} (ha.admission: {admission})",
        f"protected: {report.protected} guests ({report.protected_mib} MiB) restarted after a host failure; "
        f"{report.unprotected} running guests not protected; {report.free_pct:.1f}% of the memory of hosts up "
        f"free ({report.free_mib} of {report.total_mib} MiB)",
    ]
    if report.stays_down:
        lines.append(f"local disks, not restarted elsewhere: {escape(', '.join(report.stays_down))}")
    if report.not_counted:
        lines.append("not counted: " + escape(", ".join(f"{host} ({state})" for host, state in report.not_counted)))
    rows = [
        f"{host:<16} {load:>13} {free:>9}  {'yes' if host in report.worst else ''}"
        for host, load, free in report.loads[:TABLE_ROWS]
    ]
    if len(report.loads) > TABLE_ROWS:
        rows.append(f"… and {len(report.loads) - TABLE_ROWS} more (`evac ha capacity` lists them all)")
    if rows:
        lines.append("```" + "\n".join([f"{'host':<16} {'protected MiB':>13} {'free MiB':>9}  tried", *rows]) + "```")
    return "\n".join(lines)


def since(held: Disarmed | None) -> str:
    """`` since DATE by WHO: REASON``, the date in each reader's own time zone (Slack's date token)."""
    if held is None:
        return ""
    fallback = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held.since))
    when = f"<!date^{int(held.since)}^{{date_short_pretty}} {{time}}|{fallback}>"
    who = f"<@{held.actor.split(':', 1)[1]}>" if held.actor.startswith("slack:") else f"`{escape(held.actor)}`"
    return f" since {when} by {who}: {escape(held.reason) or 'no reason given'}"
