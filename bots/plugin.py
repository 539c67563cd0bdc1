"""Registers ``evac slack`` with the CLI through the ``evac_commands`` hook."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from evac import hookimpl
from evac.yamldoc import Mapping, load_file


def load_config(path: Path | None) -> Any:
    from .config import parse_slack

    if path is None:
        return parse_slack(None, "environment")
    data = load_file(path)
    section = data.get("slack") if isinstance(data, Mapping) else None
    return parse_slack(section, str(path))


def run(args: argparse.Namespace) -> int:
    from evac.cli import make_app

    from .config import check_ready
    from .slackapp import Bot

    config = load_config(args.config)
    if args.mode:
        from dataclasses import replace

        config = replace(config, mode=args.mode)
    check_ready(config)
    bot = Bot(make_app(args), config, client=web_client(config))
    if config.mode == "socket":
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        handler: Any = SocketModeHandler(bot.bolt, config.app_token)
        handler.start()
    else:
        bot.bolt.start(port=config.port, path="/slack/events")
    return 0


def web_client(config: Any) -> Any:
    """A client for ``slack.api_url`` (a proxy, or a test double); None: Slack itself."""
    if not config.api_url:
        return None
    from slack_sdk import WebClient

    return WebClient(token=config.bot_token, base_url=config.api_url)


@hookimpl
def evac_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("slack", help="run the Slack bot (Socket Mode by default, or HTTP)")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ["EVAC_CONFIG"]) if os.environ.get("EVAC_CONFIG") else None,
        help="evac.yaml with a slack: section (tokens come from the environment)",
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

    def routes(self) -> dict[str, Any]:
        if self.config.mode != "http":
            return {}
        from slack_bolt.request import BoltRequest

        def handle(method: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
            response = self.bot.bolt.dispatch(BoltRequest(body=body.decode(), headers=dict(headers)))
            return response.status, {k: v[0] for k, v in response.headers.items()}, response.body.encode()

        return {"/slack/events": handle}

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
