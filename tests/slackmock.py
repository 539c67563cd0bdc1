"""A local stand-in for Slack's Web API (the way slack-bolt tests itself): it answers
``auth.test``, ``chat.*``, ``usergroups.list``, ``files.*`` and ``apps.connections.open``
and records every call, and it takes ``response_url`` posts (``held`` makes a method slow
until the test lets it answer). Plus signed request bodies for the app, and Slack's end
of a Socket Mode WebSocket."""

from __future__ import annotations

import hmac
import itertools
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

from slack_bolt.request import BoltRequest


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class SlackMock:
    def __init__(self, groups: dict[str, list[str]] | None = None, address: str = "127.0.0.1") -> None:
        """``address``: where it listens; a lab's bridge address lets its hosts' bots reach it."""
        self.calls: list[Call] = []
        self.groups = groups or {}
        self.socket_url = ""  # what apps.connections.open hands out (Socket Mode)
        self.held: dict[str, threading.Event] = {}  # method -> answered once the test sets it (a slow Slack)
        self.cond = threading.Condition()
        self._ts = itertools.count(1)
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode(errors="replace")
                method = self.path.strip("/").split("/")[-1]
                if method == "upload":  # a file's bytes, as files_upload_v2 sends them
                    args: dict[str, Any] = {"body": raw}
                elif "json" in (self.headers.get("Content-Type") or ""):
                    args = json.loads(raw or "{}")
                else:
                    args = {k: v[0] for k, v in parse_qs(raw).items()}
                mock.record(method, args)
                gate = mock.held.get(method)
                if gate is not None:
                    gate.wait(30)
                body = json.dumps(mock.answer(method, args)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_POST

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}/api/"
        self.response_url = f"http://{address}:{self.server.server_address[1]}/response"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, method: str, args: dict[str, Any]) -> None:
        with self.cond:
            self.calls.append(Call(method, args))
            self.cond.notify_all()

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "url": "https://t1.slack.com/"}
        if method == "chat.postMessage":
            return {"ok": True, "channel": args.get("channel", "C1"), "ts": f"{next(self._ts)}.000"}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.socket_url}
        if method == "usergroups.list":
            return {"ok": True, "usergroups": [{"id": g, "users": users} for g, users in self.groups.items()]}
        if method == "files.getUploadURLExternal":
            return {"ok": True, "upload_url": self.url + "upload", "file_id": "F1"}
        if method == "files.completeUploadExternal":
            return {"ok": True, "files": [{"id": "F1", "title": "report"}]}
        return {"ok": True}

    def stop(self) -> None:
        self.server.shutdown()

    def find(self, method: str, text: str = "") -> list[Call]:
        with self.cond:
            return [c for c in self.calls if c.method == method and text in json.dumps(c.args)]

    def wait(self, method: str, text: str = "", timeout: float = 10) -> Call:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [c for c in self.calls if c.method == method and text in json.dumps(c.args)]
                if found:
                    return found[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {method} call with {text!r}; calls: {[c.method for c in self.calls]}")
                self.cond.wait(left)


@contextmanager
def slack_mock(groups: dict[str, list[str]] | None = None) -> Iterator[SlackMock]:
    mock = SlackMock(groups)
    try:
        yield mock
    finally:
        mock.stop()


def signed(
    secret: str, body: str, timestamp: int | None = None, signature: str | None = None, retry: int | None = None
) -> BoltRequest:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), sha256).hexdigest()
    headers: dict[str, str | Sequence[str]] = {
        "content-type": ["application/x-www-form-urlencoded"],
        "x-slack-request-timestamp": [ts],
        "x-slack-signature": [signature or f"v0={digest}"],
    }
    if retry is not None:
        headers["x-slack-retry-num"] = [str(retry)]
        headers["x-slack-retry-reason"] = ["http_timeout"]
    return BoltRequest(body=body, headers=headers)


def signed_headers(secret: str, body: str | bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with ``body``, signed with ``secret``, for a real HTTP request
    (bytes: signed as they are, so a body that is not UTF-8 can be signed too)."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    raw = body if isinstance(body, bytes) else body.encode()
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + raw, sha256).hexdigest()
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": f"v0={digest}",
    }


def command_body(command: str, text: str, user: str, response_url: str, channel: str = "C1") -> str:
    return urlencode(
        {
            "command": command,
            "text": text,
            "user_id": user,
            "user_name": "someone",
            "channel_id": channel,
            "team_id": "T1",
            "response_url": response_url,
            "trigger_id": "t1",
            "token": "legacy",
        }
    )


def action_body(action: str, value: str, user: str, response_url: str, channel: str = "C1", ts: str = "1.000") -> str:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "name": "someone"},
        "team": {"id": "T1"},
        "channel": {"id": channel},
        "message": {"ts": ts},
        "container": {"message_ts": ts},
        "response_url": response_url,
        "trigger_id": "t1",
        "api_app_id": "A1",
        "token": "legacy",
        "actions": [{"action_id": action, "block_id": "b", "value": value, "type": "button", "action_ts": "1"}],
    }
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict[str, Any], event_id: str = "Ev1") -> str:
    """An Events API delivery (``event_callback``) as Slack posts it: JSON."""
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": {"event_ts": f"{time.time():.6f}", **event},
        }
    )


def button_value(call: Call, action: str) -> str:
    """The value of the button ``action`` in a recorded message's blocks."""
    blocks = call.args["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return str(
        next(e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action)["value"]
    )


class SlackSocket:
    """Slack's end of a Socket Mode connection: greets with ``hello``, then the test sends
    envelopes and reads the app's acks."""

    def __init__(self) -> None:
        from websockets.sync.server import ServerConnection, serve

        self.connections: queue.Queue[ServerConnection] = queue.Queue()
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()

        def handler(ws: ServerConnection) -> None:
            ws.send(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}))
            self.connections.put(ws)
            for message in ws:
                self.received.put(json.loads(message))

        self.server = serve(handler, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/link"

    def send(self, envelope: dict[str, Any], timeout: float = 10) -> None:
        ws = self.connections.get(timeout=timeout)
        self.connections.put(ws)
        ws.send(json.dumps(envelope))

    def ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.received.get(timeout=max(0.01, deadline - time.monotonic()))
            if message.get("envelope_id") == envelope_id:
                return message

    def stop(self) -> None:
        while not self.connections.empty():
            self.connections.get().close()
        self.server.shutdown()
