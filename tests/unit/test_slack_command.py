"""``evac slack`` runs on the same app as every other command given the same file: the
config's inventory, journal and runbook names, and its ``slack:`` section. A drain
confirmed in Slack is in the journal ``evac history`` (and ``evac serve``) read."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from evac.app import make_app
from evac.cli import build_parser, main
from evac.errors import ConfigError
from evac.plugins import plugin_manager
from evac_bots.plugin import build, slack_settings
from evac_bots.slackapp import Bot
from tests.slackmock import SlackMock, action_body, button_value, command_body, signed, slack_mock
from tests.unit.test_slack import OPS, RUNBOOKS, SECRET, FakeDrain, Runbooks

PLUGINS = ["evac_plugins.basics", "evac_bots.plugin"]


@pytest.fixture
def mock() -> Iterator[SlackMock]:
    with slack_mock() as m:
        yield m


@pytest.fixture
def answering_port() -> Iterator[int]:
    """A port that answers, as a running host's libvirtd does."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                server.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.shutdown(socket.SHUT_RDWR)
    server.close()


@pytest.fixture
def config(tmp_path: Path, mock: SlackMock, answering_port: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("EVAC_CONFIG", "EVAC_INVENTORY", "EVAC_JOURNAL", "EVAC_PLUGINS", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    uri = f"qemu+tcp://127.0.0.1:{answering_port}/system"
    (tmp_path / "hosts.yaml").write_text(
        "hosts:\n" + "".join(f"  - {{name: host{i}, uri: '{uri}'}}\n" for i in (1, 2, 3))
    )
    path = tmp_path / "evac.yaml"
    path.write_text(
        "inventory: hosts.yaml\njournal: one.db\nrunbooks: {drain: drain-test, failover: failover-test}\n"
        "slack:\n  bot_token: env:SLACK_BOT_TOKEN\n  signing_secret: env:SLACK_SIGNING_SECRET\n"
        f"  mode: http\n  api_url: {mock.url}\n  acl: {{evacuate: {{users: [{OPS}]}}}}\n"
    )
    return path


def bot_for(argv: list[str], drain: FakeDrain, books: Path) -> Bot:
    pm = plugin_manager(load_entrypoints=False, modules=PLUGINS)
    pm.register(drain)
    pm.register(Runbooks(books))
    return build(build_parser(pm).parse_args(argv))


@pytest.fixture
def books(tmp_path: Path) -> Path:
    path = tmp_path / "runbooks"
    path.mkdir()
    for name, text in RUNBOOKS.items():
        (path / f"{name}.yaml").write_text(text)
    return path


@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_evac_slack_runs_on_the_inventory_journal_and_slack_section_of_its_config(
    config: Path, books: Path, where: str
) -> None:
    argv = ["--config", str(config), "slack"] if where == "before the command" else ["slack", "--config", str(config)]
    bot = bot_for(argv, FakeDrain(), books)
    try:
        assert bot.evac.journal_path == config.parent / "one.db"
        assert bot.evac.inventory_path == config.parent / "hosts.yaml"
        assert bot.evac.settings.runbooks.drain == "drain-test"
        assert bot.config.mode == "http" and bot.config.acl["evacuate"].users == {OPS}
    finally:
        bot.close()


def test_evac_slack_without_a_slack_section_reads_the_environment(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text("inventory: hosts.yaml\njournal: one.db\n")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-test")
    app = make_app(config, plugin_manager(load_entrypoints=False, modules=PLUGINS))
    settings = slack_settings(app)
    assert (settings.mode, settings.bot_token, settings.app_token) == ("socket", "xoxb-test", "xapp-test")


def test_a_drain_confirmed_in_slack_is_in_the_history_of_the_same_config(
    config: Path, books: Path, mock: SlackMock, capsys: pytest.CaptureFixture[str]
) -> None:
    drain = FakeDrain()
    drain.release.set()
    bot = bot_for(["--config", str(config), "slack"], drain, books)
    try:
        bot.bolt.dispatch(signed(SECRET, command_body("/evacuate", "host3", OPS, mock.response_url)))
        token = button_value(mock.wait("chat.postMessage", "Confirm drain"), "evac_confirm")
        bot.bolt.dispatch(signed(SECRET, action_body("evac_confirm", token, OPS, mock.response_url)))
        mock.wait("chat.postMessage", "Drain host3: job")
        bot.executor.shutdown(wait=True)  # the confirm has spawned its job
        bot.evac.jobs.join(30)
    finally:
        bot.close()
    capsys.readouterr()
    assert main(["--config", str(config), "history", "--json"]) == 0
    jobs = [j for j in json.loads(capsys.readouterr().out) if not j["dry_run"]]
    assert [(j["runbook"], j["target"], j["state"]) for j in jobs] == [("drain-test", "host3", "succeeded")]


def test_bots_do_not_import_the_cli() -> None:
    bots = Path(build.__code__.co_filename).parent
    for source in bots.glob("*.py"):
        assert "evac.cli" not in source.read_text(), source.name


def test_slack_file_secrets_are_read_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evac.yamldoc import load_text
    from evac_bots.config import parse_slack

    (tmp_path / "bot.token").write_text("xoxb-from-file\n")
    (tmp_path / "bot.token").chmod(0o600)
    monkeypatch.chdir("/")
    source = str(tmp_path / "evac.yaml")
    data = load_text("slack:\n  bot_token: file:bot.token\n", source)["slack"]
    assert parse_slack(data, source).bot_token == "xoxb-from-file"
    with pytest.raises(ConfigError, match=r"evac.yaml:2: slack.app_token: cannot read .*missing.token"):
        parse_slack(load_text("slack:\n  app_token: file:missing.token\n", source)["slack"], source)
