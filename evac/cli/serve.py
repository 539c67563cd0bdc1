"""``evac serve`` and ``evac config check``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from ..config import Problem
from ..errors import ConfigError
from ..runbook import bind_params, convert_param
from ..signals import until_signalled
from ..yamldoc import suggest
from .output import console
from .parser import Parser

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the monitor, webhooks, metrics and plugin services (Slack)")
    serve.set_defaults(func=cmd_serve)
    config = sub.add_parser("config", help="check evac.yaml")
    verbs = config.add_subparsers(dest="verb", required=True, parser_class=Parser)
    check = verbs.add_parser(
        "check",
        help="validate evac.yaml and the inventory it names, and prove what `evac serve` would need "
        "(secret files, listen address, journal directory, drain settings)",
    )
    check.add_argument(
        "--allow-insecure",
        action="store_true",
        help="accept secret files their group or others can read, and inline fence passwords (warn instead)",
    )
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Load everything ``evac serve`` loads, then prove what would fail only later; every
    problem is one line on stderr, and any error (or insecure secret) exits 2."""
    from ..config import preflight
    from . import make_app

    app = make_app(args)
    config, inventory = app.settings, app.inventory
    app.jobs.check()
    failed = False
    for problem in [*preflight(config, inventory), *drain_problems(app)]:
        fails = problem.kind == "error" or (problem.kind == "insecure" and not args.allow_insecure)
        failed = failed or fails
        print(f"evac: {'error' if fails else 'warning'}: {problem.message}", file=sys.stderr)
    if config.agent is not None:
        from ..watchdog import watchdog_for

        watchdog_for(app.pm, config.agent.watchdog)  # a bad method or setting: one line, exit 2
    if failed:
        return 2
    if config.agent is not None:
        console.print(f"agent: {config.agent.timings.summary()}")
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
    app.jobs.check()
    problems = drain_problems(app)
    if problems:  # every drain would be refused: refuse to start instead
        raise ConfigError(problems[0].message)
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


def drain_problems(app: App) -> list[Problem]:
    """Each ``drain:`` setting is a parameter of the drain runbook (``runbooks.drain``) and
    reads as its type, and together they bind for a drain of an inventory host, as every
    drain (CLI, Slack, webhook) binds them; otherwise every drain would be refused."""
    config, inventory = app.settings, app.inventory
    drain = app.runbook(config.runbooks.drain)
    declared = {p.name: p for p in drain.params}
    problems = []
    for key, value in config.drain_params.items():
        param = declared.get(key)
        if param is None:
            problems.append(
                Problem(
                    f"{config.at(f'drain.{key}')}: runbook '{drain.name}' (runbooks.drain) has no param '{key}'"
                    f"{suggest(key, declared)}; it takes: {', '.join(declared) or 'none'}"
                )
            )
            continue
        try:
            convert_param(param, value)
        except ConfigError as exc:
            problems.append(Problem(f"{config.at(f'drain.{key}')}: {exc}"))
    if problems or not inventory.hosts:
        return problems
    hosts = [h.name for h in inventory.hosts]
    try:
        bind_params(drain, {**config.drain_params, "host": hosts[0]}, hosts)
    except ConfigError as exc:
        problems.append(Problem(f"{config.at('runbooks.drain')}: a drain of '{hosts[0]}' would fail: {exc}"))
    return problems
