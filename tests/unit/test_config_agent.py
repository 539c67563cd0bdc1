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
