"""Slack's HTTP mode: ``/slack/events`` as an ASGI app, mounted by ``evac serve`` and
served by ``evac slack --mode http`` on evac's HTTP server (never bolt's development one).

slack-bolt's async app, behind its Starlette adapter, checks the signature on the event
loop; then each listener acks at once and hands the work to the bot's own listener (the
table Socket Mode registers too) on the bot's thread pool. A slow Slack, journal or job
start holds up one pool thread, never the loop, and Slack has its ack within 3 s.

A body that is not UTF-8, or that is no Slack request at all, is a 400 before bolt reads
it, and a signed one whose fields bolt cannot read is a 400 too (bolt would answer each
with a 500).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt import BoltResponse
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler, to_async_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.respond import Respond
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from .slackapp import Bot

log = logging.getLogger("evac.slack")
PATH = "/slack/events"
# What parsing a hostile body can raise: bad JSON (ValueError), JSON too deep
# (RecursionError), a payload that is not an object (AttributeError, TypeError, KeyError).
UNPARSABLE = (ValueError, RecursionError, AttributeError, TypeError, KeyError, IndexError)


class SlackEndpoint:
    """The ASGI app Slack posts its commands, button presses and events to."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        sync = bot.bolt.client  # the async client talks to the same Web API (``slack.api_url``)
        self.bolt = AsyncApp(
            client=AsyncWebClient(token=sync.token, base_url=sync.base_url, proxy=sync.proxy, ssl=sync.ssl),
            signing_secret=bot.config.signing_secret,
            request_verification_enabled=True,
        )
        for kind, name, listener in bot.listeners():
            getattr(self.bolt, kind)(name)(self._off_loop(listener))
        self.bolt.error(self._on_error)
        self.handler = AsyncSlackRequestHandler(self.bolt)

    async def _on_error(self, error: Exception, response: BoltResponse | None) -> BoltResponse | None:
        """bolt's error handler. Its middleware reads a signed body's fields as Slack shapes
        them, and one shaped otherwise fails there: the sender's fault, a 400 (bolt says
        500). A listener's error comes after its ack (``response`` None): logged only."""
        if response is not None and response.status == 500 and isinstance(error, UNPARSABLE):
            log.warning("slack: a signed request not shaped as Slack's: %s: %s", type(error).__name__, error)
            return BoltResponse(status=400, body="The request's fields are not shaped as Slack's.\n")
        log.error("slack: %s", error, exc_info=error)
        return None

    def _off_loop(self, listener: Callable[..., None]) -> Callable[..., Awaitable[None]]:
        """An async listener that acks, then runs the bot's ``listener`` on its pool with
        what it asks for: ``command``/``event`` (the payload), ``body``, and a ``respond``
        that posts to the request's ``response_url`` from that thread. Its own ``ack`` is
        a no-op: Slack has had the ack."""
        wanted = set(inspect.signature(listener).parameters)
        sync = self.bot.bolt.client

        async def acked(ack: Any, body: dict[str, Any], payload: dict[str, Any], context: Any) -> None:
            await ack()
            given = {
                "ack": _acked,
                "body": body,
                "command": payload,
                "event": payload,
                "respond": Respond(response_url=context.response_url, proxy=sync.proxy, ssl=sync.ssl),
            }
            work = functools.partial(listener, **{k: v for k, v in given.items() if k in wanted})
            await asyncio.get_running_loop().run_in_executor(self.bot.executor, work)

        # Not functools.wraps: bolt would read the wrapped signature and pass async ack/respond.
        acked.__name__ = acked.__qualname__ = getattr(listener, "__name__", "listener")
        return acked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: nothing to start; the bot is the caller's
            return
        response = await self.answer(Request(scope, receive))
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        if request.method != "POST":
            return PlainTextResponse("Slack posts its requests here.\n", 405, headers={"Allow": "POST"})
        body = await request.body()  # kept by the request: the adapter reads it again
        try:
            parsed = to_async_bolt_request(request, body)
        except UnicodeDecodeError:
            return PlainTextResponse("The request body is not UTF-8.\n", 400)
        except UNPARSABLE as exc:
            log.debug("slack: unparsable request body: %s", type(exc).__name__)
            return PlainTextResponse("The request body is not a Slack request (form fields or JSON).\n", 400)
        missing = _missing(parsed.body) if isinstance(parsed.body, dict) else ""
        if missing:
            return PlainTextResponse(f"The request is not shaped as Slack's: it has no {missing}.\n", 400)
        return await self.handler.handle(request)


def _text(holder: Any, *path: str) -> str:
    """The text at ``path`` in nested objects, or "" when it is absent or not text."""
    for key in path:
        holder = holder.get(key) if isinstance(holder, dict) else None
    return holder if isinstance(holder, str) else ""


def _missing(body: dict[str, Any]) -> str:
    """What a command or a button press lacks of what every listener needs (who, where,
    where to answer, which button and its value), shaped as Slack sends it; empty when
    nothing is missing. Checked before bolt reads the request, so a malformed one is a 400."""
    wanted: dict[str, tuple[str, ...]]
    if "command" in body:
        wanted = {"a user_id": ("user_id",), "a channel_id": ("channel_id",)}
        answer_to = _text(body, "response_url")
    elif body.get("type") == "block_actions":
        wanted = {"a user": ("user", "id"), "a channel": ("channel", "id"), "a message ts": ("message", "ts")}
        answer_to = _text(body, "response_url")
        actions = body.get("actions")
        if not (isinstance(actions, list) and actions and isinstance(actions[0], dict)):
            return "an action"
        if not (_text(actions[0], "action_id") and _text(actions[0], "value")):
            return "an action_id and a value"
    elif body.get("type") == "event_callback":  # the user-group events: an event object with a type
        return "" if _text(body, "event", "type") else "an event with a type"
    else:
        return ""
    lacking = [name for name, path in wanted.items() if not _text(body, *path)]
    if not answer_to.startswith(("https://", "http://")):
        lacking.append("a response_url")
    return ", ".join(lacking)


def _acked() -> None:
    """The bot's listeners call ``ack()`` first; in HTTP mode the async listener did."""
