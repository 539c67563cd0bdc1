"""``evac serve`` and ``evac config check``."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from .output import console
from .parser import Parser
from .signals import until_signalled

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the monitor, webhooks, metrics and plugin services (Slack)")
    serve.set_defaults(func=cmd_serve)
    config = sub.add_parser("config", help="check evac.yaml")
    verbs = config.add_subparsers(dest="verb", required=True, parser_class=Parser)
    check = verbs.add_parser("check", help="validate evac.yaml and the inventory it names")
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    config, inventory = app.settings, app.inventory
    app.jobs.check()
    hooks = "bearer token" if config.webhooks.token else "HMAC" if config.webhooks.hmac_secret else "off"
    sections = ", ".join(config.sections) or "none"
    console.print(
        f"{config.source}: ok; {len(inventory.hosts)} hosts ({config.inventory}); journal {config.journal}; "
        f"runbooks: drain {config.runbooks.drain}, failover {config.runbooks.failover}; "
        f"listen {config.address}:{config.port}; webhooks {hooks}; plugin sections: {sections}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .. import logs
    from ..service import Service
    from . import make_app

    app = make_app(args)
    config = app.settings
    logs.setup(config.log_format, config.log_level)
    if config.defaulted:
        log.info("evac serve: %s; defaults for: %s", config.source, ", ".join(config.defaulted))
    args.pm.register(logs.EventLog(), name="evac.eventlog")
    service = Service(app)
    service.start()
    got = until_signalled()
    log.info("evac serve: %s received, stopping", signal.Signals(got).name)
    service.stop()
    return 0
