"""The ``agent:`` section: timings that make the watchdog a fence, or a one-line refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.config import ServiceConfig, load_config
from evac.errors import ConfigError
from evac.plugins import plugin_manager

ETCD = "journal: etcd://127.0.0.1:2379\n"


def load(tmp_path: Path, text: str) -> ServiceConfig:
    (tmp_path / "agent.secret").write_text("s3cret\n")
    (tmp_path / "agent.secret").chmod(0o600)
    path = tmp_path / "evac.yaml"
    path.write_text(text)
    return load_config(path, plugin_manager())


def test_an_agent_section_gives_timings_a_shared_key_and_the_watchdog_plugin_settings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        ETCD + "agent:\n  secret: file:agent.secret\n  lease_ttl: 3\n  margin: 2\n  reset: 0.5\n"
        "  watchdog: {method: device, device: /dev/watchdog1, timeout: 3}\n",
    )
    agent = config.agent
    assert agent is not None
    assert (agent.secret, agent.port, agent.watchdog) == (
        "s3cret",
        7480,
        {"method": "device", "device": "/dev/watchdog1"},
    )
    assert (agent.timings.lease_ttl, agent.timings.watchdog_timeout, agent.timings.margin) == (3, 3, 2)


def test_a_margin_too_small_is_refused_at_its_line_with_the_worst_case(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(
            tmp_path,
            ETCD + "agent:\n  secret: file:agent.secret\n  margin: 0.5\n  watchdog: {method: device, timeout: 10}\n",
        )
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'evac.yaml'}:4: agent.margin: margin 0.5 s is")
    assert "worst case 13.5 s" in message and "\n" not in message


def test_agents_need_the_journal_on_etcd(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evac.yaml:2: agent: agents hold leases in etcd"):
        load(tmp_path, "journal: j.db\nagent: {secret: file:agent.secret, watchdog: {method: device}}\n")


def test_agents_need_a_shared_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent.secret: required"):
        load(tmp_path, ETCD + "agent: {watchdog: {method: device}}\n")


def test_agents_need_a_watchdog_method(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evac.yaml:2: agent.watchdog.method: required"):
        load(tmp_path, ETCD + "agent: {secret: file:agent.secret}\n")


def test_an_unknown_agent_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent.lease"):
        load(tmp_path, ETCD + "agent: {secret: file:agent.secret, lease: 3, watchdog: {method: device}}\n")


def test_config_check_prints_the_worst_case_the_agent_timings_imply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evac.cli import main

    config = load(
        tmp_path,
        ETCD + "agent:\n  secret: file:agent.secret\n  watchdog: {method: device, timeout: 10}\n",
    ).source
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - name: kvm1\n    uri: qemu+tcp://127.0.0.1:9/system\n")
    Path(config).write_text(Path(config).read_text() + "inventory: hosts.yaml\n")
    main(["--config", config, "config", "check"])
    out = capsys.readouterr().out
    assert "agent: a host with no BMC is counted fenced at most 16.0 s after its agent's last lease renewal" in out


def test_config_check_refuses_a_margin_too_small_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evac.cli import main

    path = tmp_path / "evac.yaml"
    (tmp_path / "agent.secret").write_text("s3cret\n")
    (tmp_path / "agent.secret").chmod(0o600)
    path.write_text(ETCD + "agent:\n  secret: file:agent.secret\n  margin: 1\n  watchdog: {method: device}\n")
    assert main(["--config", str(path), "config", "check"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"evac: error: {path}:4: agent.margin: margin 1 s is") and "worst case 14.0 s" in line


def test_a_watchdog_timeout_shorter_than_two_feeding_rounds_is_refused_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evac.yaml:7: agent.watchdog.timeout: watchdog timeout 2 s is too short"):
        load(
            tmp_path,
            ETCD + "agent:\n  secret: file:agent.secret\n  peer_timeout: 100\n  margin: 200\n"
            "  watchdog:\n    timeout: 2\n    method: device\n",
        )
