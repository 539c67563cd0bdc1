"""Registers ``evac slack`` with the CLI through the ``evac_commands`` hook."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evac import hookimpl
from evac.signals import until_signalled

if TYPE_CHECKING:
    from evac.app import App

    from .config import SlackConfig
    from .slackapp import Bot

log = logging.getLogger("evac.slack")


def slack_settings(app: App) -> SlackConfig:
    """The ``slack:`` section of the app's config file; without one, the environment alone."""
    from .config import parse_slack

    section = app.settings.sections.get("slack")
    return section if section is not None else parse_slack(None, "environment")


def build(args: argparse.Namespace) -> Bot:
    """The bot ``evac slack`` runs: on the app every command builds from ``--config`` (with
    ``--inventory``/``--journal`` over it), so a drain confirmed in Slack lands in the
    journal ``evac serve`` and ``evac history`` read with the same file."""
    from evac.app import make_app

    from .config import check_ready
    from .slackapp import Bot

    app = make_app(getattr(args, "config", None), args.pm, args.inventory, args.journal)
    config = slack_settings(app)
    if args.mode:
        config = replace(config, mode=args.mode)
    check_ready(config)
    return Bot(app, config, client=web_client(config))


def run(args: argparse.Namespace) -> int:
    bot = build(args)
    config = bot.config
    try:
        if config.mode == "socket":
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            handler: Any = SocketModeHandler(bot.bolt, config.app_token)
            handler.start()
        else:
            serve_http(bot)
    finally:
        grace = bot.evac.settings.shutdown_grace
        log.info("waiting up to %s s for the jobs started from Slack", grace)
        bot.evac.jobs.join(grace)  # what is left is in the journal: `evac resume` picks it up
        bot.close()
    return 0


def serve_http(bot: Bot) -> None:
    """``evac slack --mode http``: ``/slack/events`` on evac's HTTP server, on every
    interface at ``slack.port`` (where bolt's development server listened before), until
    SIGTERM or SIGINT."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from evac.web import WebServer

    from .endpoint import PATH, SlackEndpoint

    # A Route, not a Mount: a Mount answers the exact path with a redirect, which Slack does not follow.
    server = WebServer(Starlette(routes=[Route(PATH, SlackEndpoint(bot))]), "0.0.0.0", bot.config.port)
    server.start()
    log.info("evac slack: answering Slack on port %s at %s", server.port, PATH)
    try:
        until_signalled()
    finally:
        server.stop()


def web_client(config: Any) -> Any:
    """A client for ``slack.api_url`` (a proxy, or a test double); None: Slack itself."""
    if not config.api_url:
        return None
    from slack_sdk import WebClient

    return WebClient(token=config.bot_token, base_url=config.api_url)


@hookimpl
def evac_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "slack",
        help="run the Slack bot (Socket Mode by default, or HTTP)",
        description="The Slack bot on the app `--config` gives: its inventory and journal, and its slack: "
        "section (tokens come from the environment).",
    )
    parser.add_argument("--mode", choices=("socket", "http"), default=None)
    parser.set_defaults(func=run)


class SlackService:
    """The bot inside ``evac serve``: Socket Mode connects out; HTTP mode mounts /slack/events."""

    def __init__(self, app: Any, config: Any) -> None:
        from .config import check_ready
        from .slackapp import Bot

        check_ready(config)
        self.config = config
        self.bot = Bot(app, config, client=web_client(config))
        self.handler: Any = None
        self.endpoint: Any = None

    def mounts(self) -> Mapping[str, Any]:
        """HTTP mode: the ASGI app for ``/slack/events`` (``endpoint.SlackEndpoint``)."""
        if self.config.mode != "http":
            return {}
        from .endpoint import PATH, SlackEndpoint

        if self.endpoint is None:
            self.endpoint = SlackEndpoint(self.bot)
        return {PATH: self.endpoint}

    def start(self) -> None:
        if self.config.mode == "socket":
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            self.handler = SocketModeHandler(self.bot.bolt, self.config.app_token)
            self.handler.connect()

    def stop(self) -> None:
        if self.handler is not None:
            self.handler.close()
        self.bot.close()


@hookimpl
def evac_config_sections() -> dict[str, Any]:
    from .config import parse_slack

    return {"slack": parse_slack}


@hookimpl
def evac_services(app: Any, config: Any) -> list[Any]:
    section = config.sections.get("slack")
    return [SlackService(app, section)] if section is not None else []
