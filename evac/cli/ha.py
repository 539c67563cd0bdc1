"""``evac ha disarm|arm|status``: HA armed or disarmed across the cluster (Proxmox's
``disarm-ha``), beside the admission verbs of :mod:`evac.cli.capacity`.

The state lives in the journal, so every replica's monitor, every agent and every
channel follows it; the front door (``Jobs.disarm``, ``Jobs.arm``) audits and announces it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..app import App
from ..journal import Disarmed
from ..service import ha_health
from . import capacity
from .output import console, print_json, print_table
from .parser import Parser

DISARMED_MEANS = f"{Disarmed.MEANS}. An operator's own `evac evacuate` still runs"


def register(sub: Any) -> None:
    ha = sub.add_parser("ha", help="HA across the cluster: disarm, arm, status; guests' protection and capacity")
    verbs = ha.add_subparsers(dest="verb", required=True, parser_class=Parser)

    disarm = verbs.add_parser(
        "disarm", help="stop automatic failover, guest restarts and self-fencing (monitors still watch and alert)"
    )
    disarm.add_argument("--reason", default="", help="one line: why (shown in Slack, `evac ha status` and /healthz)")
    disarm.set_defaults(func=cmd_disarm)

    arm = verbs.add_parser("arm", help="resume HA: hosts down now are failed over at once")
    arm.set_defaults(func=cmd_arm)

    status = verbs.add_parser(
        "status", help="armed or disarmed, and what each host's agent acknowledged (exit 1: disarmed)"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    capacity.register(verbs)


def cmd_disarm(args: argparse.Namespace) -> int:
    from . import make_app
    from .jobs import actor

    app = make_app(args)
    if not app.jobs.disarm(actor(), args.reason):
        held = app.journal.disarmed()
        console.print(f"HA was disarmed already{_since(held)}: nothing changed", highlight=False)
        return 0
    console.print(f"HA disarmed: {DISARMED_MEANS}. `evac ha arm` resumes.", highlight=False)
    return 0


def cmd_arm(args: argparse.Namespace) -> int:
    from . import make_app
    from .jobs import actor

    app = make_app(args)
    held = app.jobs.arm(actor())
    if held is None:
        console.print("HA was armed already: nothing changed")
        return 0
    console.print(
        f"HA armed (disarmed{_since(held)}): a running monitor fails over the hosts down now, guests that "
        "died meanwhile are restarted, and agents self-fence again",
        highlight=False,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 1 while disarmed, as ``evac brake status`` while engaged: a script can tell."""
    from . import make_app

    app = make_app(args)
    held = app.journal.disarmed()
    agents = agent_rows(app)
    if args.json:
        print_json(
            {
                **ha_health(held),
                "agents": {host: {"state": state, "acknowledged": ack} for host, state, ack, _ in agents},
            }
        )
        return 0 if held is None else 1
    if held is None:
        console.print("HA: armed (automatic failover, guest restarts and agents' self-fencing on)")
    else:
        console.print(f"HA: DISARMED{_since(held)}", highlight=False)
        console.print(f"  {DISARMED_MEANS}. `evac ha arm` resumes.", highlight=False)
    if agents:
        print_table("agents", ["host", "agent", "acknowledged", "note"], agents)
    return 0 if held is None else 1


def agent_rows(app: App) -> list[tuple[str, str, str | None, str]]:
    """Each host's agent and what its record acknowledges of HA, with what that means now;
    none without agents (no ``agent:`` section, or no journal on etcd)."""
    from ..agent import acknowledgments
    from ..selffence import HaMode

    view = app.agents
    if view is None:
        return []
    disarmed = app.journal.disarmed() is not None
    rows = []
    for host, (state, ack) in sorted(acknowledgments(view.cluster, view.prefix).items()):
        mode = ack.mode
        if state != "running":
            note = ""
        elif mode is None:
            note = "acknowledges nothing: its watchdog never counts as a fence"
        elif mode is HaMode.DISARMED and not disarmed:
            note = "has not seen the arm yet: its watchdog does not count as a fence until it does"
        elif mode is HaMode.ARMED and disarmed:
            note = "has not seen the disarm yet: it still self-fences"
        else:
            note = ""
        rows.append((host, state, str(mode) if mode else None, note))
    return rows


def _since(held: Disarmed | None) -> str:
    return f" {held.describe()}" if held else ""
