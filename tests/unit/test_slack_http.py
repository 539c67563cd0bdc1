"""Slack's HTTP mode through the ASGI app ``evac serve`` mounts and ``evac slack --mode
http`` serves: bolt's async app behind its Starlette adapter, signed requests as Slack
signs them, the mock Web API recording what the bot does. Requests go through httpx into
an event loop on its own thread, as a server's would, so a blocked loop shows as a
request that is not answered."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from evac import web
from evac.app import make_app
from evac.plugins import plugin_manager
from evac_bots import plugin
from evac_bots.endpoint import PATH, SlackEndpoint
from evac_bots.slackapp import Bot
from tests.slackmock import SlackMock, action_body, button_value, command_body, signed_headers, slack_mock
from tests.unit.test_slack import GROUPIE, OPS, SECRET, Clock, FakeDrain, answering_port, running_bot


class Loop:
    """An ASGI app on an event loop of its own thread; ``post`` returns at once with the
    response's future."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asgi-loop", daemon=True)
        self.thread.start()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://evac")

    def post(self, body: str | bytes, headers: dict[str, str], path: str = PATH) -> Future[httpx.Response]:
        return asyncio.run_coroutine_threadsafe(self.http.post(path, content=body, headers=headers), self.loop)

    def get(self, path: str = PATH) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(self.http.get(path), self.loop).result(5)

    def close(self) -> None:
        async def finish() -> None:
            await self.http.aclose()
            others = asyncio.all_tasks() - {asyncio.current_task()}
            await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), 30)  # listeners on their way

        asyncio.run_coroutine_threadsafe(finish(), self.loop).result(40)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def mock() -> Iterator[SlackMock]:
    with slack_mock(groups={"SOPS": [GROUPIE]}) as m:
        yield m


@pytest.fixture
def bot(tmp_path: Path, mock: SlackMock) -> Iterator[Bot]:
    with answering_port() as port, running_bot(tmp_path, mock, FakeDrain(), Clock(), port) as the_bot:
        yield the_bot


@pytest.fixture
def slack(bot: Bot) -> Iterator[Loop]:
    loop = Loop(SlackEndpoint(bot))
    try:
        yield loop
    finally:
        loop.close()


def slash(slack: Loop, mock: SlackMock, text: str, user: str = OPS, command: str = "/evacuate") -> httpx.Response:
    body = command_body(command, text, user, mock.response_url)
    return slack.post(body, signed_headers(SECRET, body)).result(3)  # Slack waits 3 s for the ack


def press(slack: Loop, mock: SlackMock, action: str, value: str, user: str = OPS) -> httpx.Response:
    body = action_body(action, value, user, mock.response_url)
    return slack.post(body, signed_headers(SECRET, body)).result(3)


def test_a_signed_slash_command_is_acked_at_once_and_its_preview_posted(slack: Loop, mock: SlackMock) -> None:
    started = time.monotonic()
    response = slash(slack, mock, "host3 kernel update")
    assert (response.status_code, response.text) == (200, "")
    assert time.monotonic() - started < 3
    assert "kernel update" in json.dumps(mock.wait("chat.postMessage", "Drain host3?").args)


def test_a_signed_button_is_acked_and_starts_the_drain(slack: Loop, mock: SlackMock, bot: Bot) -> None:
    slash(slack, mock, "host3")
    token = button_value(mock.wait("chat.postMessage", "Confirm drain"), "evac_confirm")
    assert press(slack, mock, "evac_confirm", token).status_code == 200
    mock.wait("chat.postMessage", "Drain host3: job")
    mock.wait("chat.update", "confirmed by")
    assert [j.target for j in bot.evac.journal.unfinished_jobs()] == ["host3"]


def test_a_command_answers_through_its_response_url(slack: Loop, mock: SlackMock) -> None:
    assert slash(slack, mock, "help", command="/evac").status_code == 200
    assert "/evac status" in mock.wait("response", "*evac*").args["text"]


def test_a_request_with_a_bad_signature_gets_401_and_does_nothing(slack: Loop, mock: SlackMock) -> None:
    body = command_body("/evac", "help", OPS, mock.response_url)
    forged = signed_headers("not-the-secret", body)
    assert slack.post(body, forged).result(3).status_code == 401
    stale = signed_headers(SECRET, body, timestamp=int(time.time()) - 600)
    assert slack.post(body, stale).result(3).status_code == 401
    assert mock.find("response") == [] and mock.find("auth.test") == []


def test_a_body_that_is_not_utf8_gets_400(slack: Loop) -> None:
    body = "command=/evac&text=h\xe9lp".encode("latin-1")
    response = slack.post(body, signed_headers(SECRET, body)).result(3)
    assert (response.status_code, response.text) == (400, "The request body is not UTF-8.\n")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "payload=%7Bnot-json"),
        ("application/x-www-form-urlencoded", "payload=%5B1%2C2%5D"),
        ("application/json", "[1, 2]"),
        ("application/json", "{"),
        ("application/json", "[" * 100_000 + "]" * 100_000),
    ],
    ids=["payload-not-json", "payload-not-an-object", "json-not-an-object", "json-cut-short", "json-too-deep"],
)
def test_a_body_that_is_no_slack_request_gets_400(slack: Loop, content_type: str, body: str) -> None:
    headers = {**signed_headers(SECRET, body), "content-type": content_type}
    assert slack.post(body, headers).result(3).status_code == 400


def test_a_signed_body_whose_fields_are_not_slacks_gets_400(slack: Loop) -> None:
    body = json.dumps({"type": "event_callback", "event": ["not", "an", "object"]})
    headers = {**signed_headers(SECRET, body), "content-type": "application/json"}
    assert slack.post(body, headers).result(3).status_code == 400


def test_only_post_is_answered(slack: Loop) -> None:
    response = slack.get()
    assert (response.status_code, response.headers["allow"]) == (405, "POST")


def test_a_slow_listener_does_not_hold_up_another_request(slack: Loop, mock: SlackMock) -> None:
    """A group member's /evacuate waits on a slow usergroups.list; meanwhile another
    command is acked and answered. Were a listener run on the event loop, neither would
    be: the loop would wait for the slow call."""
    gate = mock.held["usergroups.list"] = threading.Event()
    deadline = threading.Timer(10, gate.set)  # a wrongly blocked loop fails the test, not the run
    deadline.start()
    try:
        assert slash(slack, mock, "host3", user=GROUPIE).status_code == 200
        mock.wait("usergroups.list")  # the first listener is in the slow call now
        assert slash(slack, mock, "status", command="/evac").status_code == 200
        mock.wait("response", "no running jobs")
        assert not gate.is_set()  # answered while the first listener still waits
    finally:
        gate.set()
        deadline.cancel()
    mock.wait("chat.postMessage", "Drain host3?")  # and the slow one finishes its work


def test_the_slack_service_mounts_the_bot_at_slack_events_in_http_mode(
    tmp_path: Path, mock: SlackMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: host1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    (tmp_path / "evac.yaml").write_text(
        "inventory: hosts.yaml\njournal: j.db\nmonitor: {enabled: false}\n"
        "slack:\n  bot_token: env:SLACK_BOT_TOKEN\n  signing_secret: env:SLACK_SIGNING_SECRET\n  mode: http\n"
        f"  api_url: {mock.url}\n"
    )
    pm = plugin_manager(load_entrypoints=False, modules=["evac_plugins.basics", "evac_bots.plugin"])
    app = make_app(tmp_path / "evac.yaml", pm)
    [service] = [s for found in pm.hook.evac_services(app=app, config=app.settings) for s in found]
    mounts = service.mounts()
    assert list(mounts) == ["/slack/events"]
    loop = Loop(mounts["/slack/events"])
    try:
        body = command_body("/evac", "help", OPS, mock.response_url)
        assert loop.post(body, signed_headers(SECRET, body)).result(3).status_code == 200
        mock.wait("response", "*evac*")
    finally:
        loop.close()
        service.stop()


def test_evac_slack_in_http_mode_serves_the_endpoint_on_evacs_web_server_not_bolts(
    bot: Bot, mock: SlackMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers: list[web.WebServer] = []

    class WebServer(web.WebServer):
        def __init__(self, asgi_app: Any, address: str, port: int, settings: Any = None) -> None:
            super().__init__(asgi_app, address, port, settings)
            servers.append(self)

    def while_running() -> int:
        [server] = servers
        assert server.socket.getsockname()[0] == "0.0.0.0"  # every interface, as before
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            body = command_body("/evac", "help", OPS, mock.response_url)
            assert client.post("/slack/events", content=body, headers=signed_headers(SECRET, body)).status_code == 200
            mock.wait("response", "*evac*")
            assert client.post("/elsewhere", content=body).status_code == 404
        return signal.SIGTERM

    bot.config = replace(bot.config, port=0)
    monkeypatch.setattr(web, "WebServer", WebServer)
    monkeypatch.setattr(plugin, "build", lambda args: bot)
    monkeypatch.setattr(plugin, "until_signalled", while_running)
    monkeypatch.setattr(bot.bolt, "start", None)  # bolt's development server: never
    assert plugin.run(argparse.Namespace()) == 0
    with pytest.raises(httpx.ConnectError):  # stopped on the way out
        httpx.post(f"http://127.0.0.1:{servers[0].port}/slack/events", timeout=5)
