"""Socket Mode, the bot's default: it dials out to the WebSocket URL that
``apps.connections.open`` hands it and acks every envelope on that socket within Slack's
3 seconds. Slack's end is a local WebSocket server; the Web API is the local mock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from evac.app import App
from evac.plugins import plugin_manager
from evac_bots.config import SlackConfig
from evac_bots.plugin import SlackService
from tests.slackmock import SlackMock, SlackSocket, command_body, slack_mock


@pytest.fixture
def connected(tmp_path: Path) -> Iterator[tuple[SlackMock, SlackSocket]]:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("hosts:\n  - {name: host1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    app = App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=plugin_manager(load_entrypoints=False))
    socket = SlackSocket()
    with slack_mock() as mock:
        mock.socket_url = socket.url
        config = SlackConfig(bot_token="xoxb-test", app_token="xapp-test", mode="socket", api_url=mock.url)
        service = SlackService(app, config)
        service.start()
        try:
            yield mock, socket
        finally:
            service.stop()
            socket.stop()


def test_the_bot_opens_its_socket_with_the_app_token(connected: tuple[SlackMock, SlackSocket]) -> None:
    mock, _ = connected
    assert mock.wait("apps.connections.open").args.get("token", "xapp-test") == "xapp-test"


def test_a_slash_command_over_the_socket_is_acked_on_it_and_answered(
    connected: tuple[SlackMock, SlackSocket],
) -> None:
    mock, socket = connected
    payload = dict(parse_qsl(command_body("/evac", "help", "UOPS", mock.response_url)))
    socket.send({"envelope_id": "e1", "type": "slash_commands", "accepts_response_payload": True, "payload": payload})
    assert socket.ack("e1", timeout=3)["envelope_id"] == "e1"
    assert "/evac status" in mock.wait("response", "*evac*").args["text"]
