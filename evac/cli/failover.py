"""``evac monitor`` (watch hosts, fail over dead ones) and ``evac fence HOST``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import ConfigError
from ..events import Event
from ..evidence import MonitorSettings
from ..hooks import hookimpl
from ..monitor import Monitor
from ..signals import until_signalled
from ..snapshots import Snapshotter
from ..stormbrake import StormBrake
from .output import console
from .progress import TerminalProgress


def register(sub: Any) -> None:
    monitor = sub.add_parser("monitor", help="watch every host; fence and fail over hosts that die")
    monitor.add_argument("--interval", type=float, default=0.5, help="seconds between probes")
    monitor.add_argument("--no-failover", action="store_true", help="only report host states")
    monitor.add_argument("--max-down", type=int, default=1, help="hosts down within the window before the storm brake")
    monitor.add_argument("--window", type=float, default=120.0, help="storm brake window in seconds")
    monitor.set_defaults(func=cmd_monitor)

    fence = sub.add_parser("fence", help="fence a host now (then fail it over)")
    fence.add_argument("host")
    fence.add_argument(
        "--confirm-manually",
        action="store_true",
        help="you checked the host is off by hand: record it as fenced without a fence method",
    )
    fence.add_argument("--no-failover", action="store_true", help="do not restart its guests afterwards")
    fence.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    fence.set_defaults(func=cmd_fence)

    brake = sub.add_parser("brake", help="the storm brake: show it, or release it so automatic failover resumes")
    brake.add_argument("verb", nargs="?", choices=["status", "release"], default="status")
    brake.set_defaults(func=cmd_brake)


class HostEvents:
    @hookimpl
    def evac_event(self, event: Event) -> None:
        if event.job_id == 0:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
            console.print(f"[dim]{stamp}[/] {event.kind} {event.item}: {event.message}", highlight=False)


def cmd_monitor(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    app.pm.register(HostEvents())
    app.pm.register(TerminalProgress(console))
    app.jobs.check()  # a missing runbook is an error now, not at the first failure

    on_down = (lambda host, reason: None) if args.no_failover else app.jobs.host_down
    monitor = Monitor(
        app, on_down, MonitorSettings(interval=args.interval), StormBrake(args.max_down, window=args.window)
    )
    snapshots = Snapshotter(app, every=app.settings.snapshots.every)
    snapshots.start()
    monitor.start()
    console.print(f"watching {len(app.inventory.hosts)} hosts; Ctrl-C stops")
    until_signalled()
    monitor.stop()
    snapshots.stop()
    return 0


def cmd_fence(args: argparse.Namespace) -> int:
    from . import make_app
    from .jobs import actor, execute

    app = make_app(args)
    spec = app.inventory.host(args.host)
    if not args.yes and not args.confirm_manually:
        raise ConfigError(f"fence: powering {spec.name} off is final; confirm with --yes")
    if args.confirm_manually:
        app.jobs.fence_manually(spec.name, actor())
        console.print(f"{spec.name} recorded as fenced (by hand, {actor()})")
    else:
        result = app.jobs.fence(spec.name, actor())
        console.print(f"{spec.name} fenced by {result.method} in {result.seconds:.2f} s")
    if args.no_failover:
        return 0
    return execute(app, app.jobs.fail_over(spec.name, actor(), "fenced by operator"), args)[0]


def cmd_brake(args: argparse.Namespace) -> int:
    """The brake lives in the journal, so a running ``evac serve`` or ``evac monitor`` follows."""
    from . import make_app
    from .jobs import actor

    app = make_app(args)
    held = app.journal.brake()
    if args.verb == "status":
        if held is None:
            console.print("storm brake: released (automatic failover on)")
            return 0
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held.since))
        console.print(f"storm brake: ENGAGED since {since}: {held.reason}", highlight=False)
        return 1
    if app.jobs.release_brake(actor()) is None:
        console.print("storm brake: was not engaged")
        return 0
    console.print("storm brake released: automatic failover resumes, and hosts still down fail over now")
    return 0
