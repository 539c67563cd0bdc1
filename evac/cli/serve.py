"""``evac serve`` and ``evac config check``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from typing import Any

from ..config import load_config
from .output import console
from .parser import Parser
from .signals import until_signalled

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    default = Path(os.environ.get("EVAC_CONFIG", "/etc/evac/evac.yaml"))
    serve = sub.add_parser("serve", help="run the monitor, webhooks, metrics and plugin services (Slack)")
    serve.add_argument("--config", type=Path, default=default, help="evac.yaml (default: $EVAC_CONFIG or %(default)s)")
    serve.set_defaults(func=cmd_serve)
    config = sub.add_parser("config", help="check evac.yaml")
    verbs = config.add_subparsers(dest="verb", required=True, parser_class=Parser)
    check = verbs.add_parser("check", help="validate evac.yaml and the inventory it names")
    check.add_argument("--config", type=Path, default=default)
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from ..inventory import load_inventory

    config = load_config(args.config, args.pm)
    inventory = load_inventory(config.inventory)
    hooks = "bearer token" if config.webhooks.token else "HMAC" if config.webhooks.hmac_secret else "off"
    sections = ", ".join(config.sections) or "none"
    console.print(
        f"{args.config}: ok; {len(inventory.hosts)} hosts ({config.inventory}); journal {config.journal}; "
        f"listen {config.address}:{config.port}; webhooks {hooks}; plugin sections: {sections}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .. import logs
    from ..service import Service

    config = load_config(args.config, args.pm)
    logs.setup(config.log_format, config.log_level)
    args.pm.register(logs.EventLog(), name="evac.eventlog")
    service = Service(config, args.pm)
    service.start()
    got = until_signalled()
    log.info("evac serve: %s received, stopping", signal.Signals(got).name)
    service.stop()
    return 0
