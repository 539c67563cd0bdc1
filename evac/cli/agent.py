"""``evac agent``: the per-host daemon that self-fences by watchdog (docs/ha.md)."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from types import FrameType
from typing import Any

from ..errors import ConfigError
from ..signals import TICK

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    agent = sub.add_parser(
        "agent",
        help="run on every host: hold its etcd lease, feed its watchdog while healthy, report dead guests",
    )
    agent.add_argument("--host", default=None, help="this host's inventory name (default: the machine's host name)")
    agent.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    from .. import logs
    from ..agent import Agent
    from ..watchdog import watchdog_for
    from . import make_app

    app = make_app(args)
    config = app.settings
    if config.agent is None or config.cluster is None:
        raise ConfigError(f"{config.source}: agent: no agent: section (and journal: etcd://…), see docs/ha.md")
    spec = app.inventory.host(args.host or socket.gethostname())  # also registers the inventory's plugins
    watchdog = watchdog_for(app.pm, config.agent.watchdog)
    logs.setup(config.log_format, config.log_level)
    agent = Agent(spec, app.inventory, config.agent, config.cluster.etcd, watchdog)
    stopping = threading.Event()
    got: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):  # before the watchdog is armed: a stop is always a clean one
        signal.signal(sig, note)
    if agent.start(stopping=stopping):
        log.info("evac agent on %s: %s", spec.name, config.agent.timings.summary())
    while not stopping.wait(TICK):
        pass
    log.info("evac agent: %s received, stopping", signal.Signals(got[0]).name if got else "stop")
    return 0 if agent.stop() else 1
