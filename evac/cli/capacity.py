"""``evac ha protect|unprotect GUEST`` and ``evac ha capacity``: which guests evac restarts
after a host failure, and how many host failures the fleet can absorb.

Membership is the guest's ``ha-protected`` metadata (or its tag's ``guests.tags.T.protect``,
else ``guests.protect``); these verbs write the metadata, live and persistent, audited.
With ``ha.admission: enforce`` a protection that would break ``ha.reserve`` is refused and
nothing changes; with ``warn`` (the default) it is made and the warning printed. See
docs/admission.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..admission import CapacityReport, Verdict
from ..restartpolicy import HaSettings
from .output import console, print_json, print_table

RESTART_MEANS = {True: "evac restarts it after a host failure", False: "evac leaves it down after a host failure"}


def register(verbs: Any) -> None:
    """Adds ``protect``, ``unprotect`` and ``capacity`` to ``evac ha``'s subparsers."""
    for name, on in (("protect", True), ("unprotect", False)):
        verb = verbs.add_parser(
            name,
            help=f"{'make' if on else 'stop making'} GUEST a member of HA: {RESTART_MEANS[on]}"
            + (" (checked against ha.reserve)" if on else ""),
        )
        verb.add_argument("guest", metavar="GUEST")
        verb.set_defaults(func=cmd_protect, protect=on)
    capacity = verbs.add_parser(
        "capacity",
        help="how many host failures the fleet can absorb, and why not one more (exit 1: the reserve is broken)",
    )
    capacity.add_argument("--json", action="store_true")
    capacity.set_defaults(func=cmd_capacity)


def cmd_protect(args: argparse.Namespace) -> int:
    from ..protection import protect
    from . import make_app
    from .jobs import actor

    app = make_app(args)
    done = protect(app, args.guest, actor(), args.protect)
    where = ", ".join(done.hosts)
    state = "protected" if done.protected else "unprotected"
    console.print(
        f"{done.guest} {state}: {RESTART_MEANS[done.protected]} (ha-protected on {where}, live and persistent)",
        highlight=False,
    )
    if done.admission is not None and not done.admission.changes:
        console.print(f"  the reserve is unchanged: {done.admission.note}", highlight=False)
    if done.warning:
        print(f"evac: warning: {done.warning} (ha.admission: warn; `evac ha capacity` says more)", file=sys.stderr)
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    """Exit 1 while the reserve is broken, as ``evac ha status`` while disarmed."""
    from ..protection import verdict
    from . import make_app

    app = make_app(args)
    found = verdict(app)
    settings = HaSettings.of(app.settings.sections)
    if args.json:
        print_json(as_json(found, settings))
        return 0 if found.holds else 1
    report = found.report
    console.print(f"capacity: {report.summary()}", highlight=False)
    console.print(f"{found.why} (ha.admission: {settings.admission})", highlight=False)
    console.print(
        f"protected: {report.protected} guests ({report.protected_mib} MiB) restarted after a host failure; "
        f"{report.unprotected} running guests not protected; {report.free_pct:.1f}% of the memory of hosts up "
        f"free ({report.free_mib} of {report.total_mib} MiB)",
        highlight=False,
    )
    if report.stays_down:
        console.print(f"local disks, not restarted elsewhere: {', '.join(report.stays_down)}", highlight=False)
    if report.not_counted:
        console.print(
            "not counted: " + ", ".join(f"{host} ({state})" for host, state in report.not_counted), highlight=False
        )
    print_table(
        "hosts, worst first",
        ["host", "protected MiB", "free MiB", "tried"],
        [(host, load, free, "yes" if host in report.worst else "") for host, load, free in report.loads],
    )
    return 0 if found.holds else 1


def as_json(found: Verdict, settings: HaSettings) -> dict[str, Any]:
    report: CapacityReport = found.report
    return {
        "absorbs": report.absorbs,
        "summary": report.summary(),
        "reserve": str(found.reserve),
        "admission": str(settings.admission),
        "holds": found.holds,
        "why": found.why,
        "not_more": (
            None
            if report.shortfall is None
            else {
                "lost": list(report.shortfall.lost),
                "guest": report.shortfall.guest,
                "memory_mib": report.shortfall.memory_mib,
                "reason": report.shortfall.reason,
            }
        ),
        "worst": list(report.worst),
        "protected": report.protected,
        "protected_mib": report.protected_mib,
        "unprotected": report.unprotected,
        "free_mib": report.free_mib,
        "total_mib": report.total_mib,
        "free_pct": round(report.free_pct, 1),
        "stays_down": list(report.stays_down),
        "not_counted": dict(report.not_counted),
        "hosts": [{"host": h, "protected_mib": load, "free_mib": free} for h, load, free in report.loads],
    }
