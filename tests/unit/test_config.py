"""evac.yaml: validated with file:line errors; secrets only from env or files; plugin sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evac import hookimpl
from evac.app import App
from evac.cli import main
from evac.config import load_config, settings
from evac.errors import ConfigError
from evac.plugins import plugin_manager


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "evac.yaml"
    path.write_text(text)
    return path


def test_minimal_config_uses_defaults_and_resolves_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "inventory: hosts.yaml\njournal: state/j.db\n"), plugin_manager())
    assert config.inventory == tmp_path / "hosts.yaml" and config.port == 8080
    assert config.shutdown_in_flight == "finish" and config.webhooks.token == ""


def test_webhook_token_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "abc")
    config = load_config(write(tmp_path, "webhooks: {token: 'env:HOOK_TOKEN'}\n"), plugin_manager())
    assert config.webhooks.token == "abc"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("webhook: {}\n", "evac.yaml:1: webhook: unknown field (did you mean 'webhooks'?)"),
        ("webhooks:\n  token: hunter2\n", "evac.yaml:2: webhooks.token: secrets are given as env:NAME or file:PATH"),
        (
            "webhooks:\n  token: env:NOT_SET_ANYWHERE\n",
            "evac.yaml:2: webhooks.token: environment variable NOT_SET_ANYWHERE is not set",
        ),
        ("listen:\n  port: http\n", "evac.yaml:2: listen.port: expected a port number, got 'http'"),
        ("listen:\n  metrics_token: abc\n", "evac.yaml:2: listen.metrics_token: secrets are given as env:NAME"),
        ("monitor:\n  interval: fast\n", "evac.yaml:2: monitor.interval: expected a number >= 0"),
        ("shutdown:\n  in_flight: wait\n", "evac.yaml:2: shutdown.in_flight: expected finish or abort, got 'wait'"),
        ("logging: {format: xml}\n", "evac.yaml:1: logging.format: expected text or json, got 'xml'"),
        ("slack:\n  bot_token: xoxb-1\n", "evac.yaml:2: slack.bot_token: secrets are given as env:NAME or file:PATH"),
    ],
)
def test_bad_config_names_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), plugin_manager())
    assert str(info.value).replace(str(tmp_path) + "/", "").startswith(message)


def test_a_plugin_claims_its_own_section_through_evac_config_sections(tmp_path: Path) -> None:
    class Pager:
        @hookimpl
        def evac_config_sections(self) -> dict[str, Any]:
            return {"pager": lambda data, source: {"service": data["service"]}}

    pm = plugin_manager(load_entrypoints=False)
    pm.register(Pager())
    config = load_config(write(tmp_path, "pager: {service: ops}\n"), pm)
    assert config.sections == {"pager": {"service": "ops"}}


def test_evac_services_mount_asgi_apps_on_the_web_server(tmp_path: Path) -> None:
    import urllib.request

    from starlette.types import Receive, Scope, Send

    from evac.service import Service

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    class Echo:
        def mounts(self) -> dict[str, Any]:
            return {"/echo": echo}

        def start(self) -> None: ...
        def stop(self) -> None: ...

    class Plugin:
        @hookimpl
        def evac_services(self, app: Any, config: Any) -> list[Any]:
            return [Echo()]

    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Plugin())
    config = load_config(
        write(
            tmp_path,
            f"inventory: hosts.yaml\njournal: {tmp_path}/j.db\nmonitor: {{enabled: false}}\nlisten: {{port: 0}}\n",
        ),
        pm,
    )
    service = Service(App.from_config(config, pm))
    service.http.start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{service.http.port}/echo", data=b"hi", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert (answer.status, answer.read()) == (200, b"hi")
    finally:
        service.http.stop()


def test_the_shipped_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EVAC_WEBHOOK_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"):
        monkeypatch.setenv(name, "x")
    config = load_config(Path(__file__).parents[2] / "contrib" / "evac.yaml", plugin_manager())
    assert config.monitor.failover and "slack" in config.sections


def test_without_a_file_every_command_runs_on_the_documented_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVAC_CONFIG", raising=False)
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "hosts.yaml"))
    monkeypatch.setattr("evac.config.SYSTEM_CONFIG", tmp_path / "no-such-evac.yaml")
    config = settings(None, plugin_manager())
    assert config.source == "<defaults>"
    assert config.inventory == tmp_path / "hosts.yaml"
    assert (config.address, config.port, config.monitor.enabled) == ("127.0.0.1", 8080, True)
    assert f"inventory {tmp_path / 'hosts.yaml'}" in config.defaulted
    assert (config.runbooks.drain, config.runbooks.failover) == ("maintenance", "host-failure")


def test_evac_config_names_the_file_when_no_flag_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVAC_CONFIG", str(write(tmp_path, "journal: from-env.db\n")))
    assert settings(None, plugin_manager()).journal == tmp_path / "from-env.db"
    assert settings(None, plugin_manager(), journal=tmp_path / "flag.db").journal == tmp_path / "flag.db"


def test_every_command_sees_the_journal_of_the_config_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVAC_JOURNAL", raising=False)
    book = tmp_path / "hi.yaml"
    book.write_text("name: hi\nsteps:\n  - {id: say, action: notify.log, with: {text: hi}}\n")
    config = str(write(tmp_path, "inventory: hosts.yaml\njournal: shared.db\n"))
    assert main(["--config", config, "run", str(book), "--json"]) == 0
    capsys.readouterr()
    for argv in (["--config", config, "history", "--json"], ["history", "--config", config, "--json"]):
        assert main(argv) == 0
        assert [job["runbook"] for job in json.loads(capsys.readouterr().out)] == ["hi"]
    assert (tmp_path / "shared.db").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runbooks: {drain: 3}\n", "evac.yaml:1: runbooks.drain: expected a string, got int 3"),
        (
            "runbooks: {drain: no}\n",
            'evac.yaml:1: runbooks.drain: expected a string; YAML reads no as false — quote it: "no"',
        ),
        (
            "listen: {address: off}\n",
            'evac.yaml:1: listen.address: expected a string; YAML reads off as false — quote it: "off"',
        ),
        ("runbooks: {dran: x}\n", "evac.yaml:1: runbooks.dran: unknown field (did you mean 'drain'?)"),
        ("snapshots: {every: 0}\n", "evac.yaml:1: snapshots.every: expected seconds > 0, got 0.0"),
    ],
)
def test_runbook_names_and_snapshot_interval_are_checked(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), plugin_manager())
    assert str(caught.value) == message.replace("evac.yaml", str(tmp_path / "evac.yaml"))


def test_serve_without_a_file_runs_on_the_defaults_and_logs_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import signal

    monkeypatch.delenv("EVAC_CONFIG", raising=False)
    monkeypatch.setattr("evac.config.SYSTEM_CONFIG", tmp_path / "no-such-evac.yaml")
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "hosts.yaml"))
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    served: list[App] = []

    class Service:
        def __init__(self, app: App) -> None:
            served.append(app)

        def start(self) -> None: ...
        def stop(self) -> None: ...

    monkeypatch.setattr("evac.service.Service", Service)
    monkeypatch.setattr("evac.cli.serve.until_signalled", lambda: signal.SIGTERM)
    monkeypatch.setattr("evac.logs.setup", lambda fmt, level: None)  # keep pytest's log capture
    caplog.set_level(logging.INFO)
    assert main(["serve"]) == 0
    assert served[0].settings.source == "<defaults>"
    assert (
        f"evac serve: <defaults>; defaults for: inventory {tmp_path / 'hosts.yaml'}, journal {tmp_path / 'j.db'}"
        in (caplog.text)
    )
