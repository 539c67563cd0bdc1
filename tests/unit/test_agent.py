"""``evac agent`` on a real etcd and real peers on loopback, with a watchdog that records.

The lab's integration tests (tests/integration/test_agent.py) prove what a reset does;
these prove the agent's order of things and its rule, quickly.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evac.agent import Agent
from evac.agents import RUNNING, STOPPED, AgentState, AgentView, live_key, state_key
from evac.config import AgentSettings
from evac.errors import HostUnreachable
from evac.etcdclient import Cluster, EtcdSettings
from evac.hypervisor import Hypervisor
from evac.inventory import Inventory, load_inventory
from evac.selffence import Timings
from tests.conftest import poll_until

MakeAgent = Callable[[str], Agent]
TIMINGS = Timings(lease_ttl=3, watchdog_timeout=3, margin=2, peer_timeout=0.5, reset=0.5)


class RecordingWatchdog:
    """Device semantics, recorded: what the agent did to its watchdog, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.feeds = 0

    @property
    def armed(self) -> bool:
        return "arm" in self.calls and self.calls[-1] not in ("disarm", "abandon")

    def arm(self, timeout: float) -> float:
        self.calls.append("arm")
        return timeout

    def feed(self) -> None:
        self.feeds += 1

    def disarm(self) -> None:
        self.calls.append("disarm")

    def abandon(self) -> None:
        self.calls.append("abandon")


def recorded(agent: Agent) -> RecordingWatchdog:
    assert isinstance(agent.watchdog, RecordingWatchdog)
    return agent.watchdog


def no_libvirt(name: str, uri: str) -> Hypervisor:
    raise HostUnreachable(f"{name}: no libvirt in unit tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    hosts = "".join(
        f"  - {{name: host{i}, uri: 'qemu+tcp://127.0.0.{i + 1}/system', address: 127.0.0.{i + 1}}}\n"
        for i in (1, 2, 3)
    )
    (tmp_path / "hosts.yaml").write_text("hosts:\n" + hosts)
    return load_inventory(tmp_path / "hosts.yaml")


@pytest.fixture
def make_agent(inventory: Inventory, etcd_settings: EtcdSettings) -> Iterator[MakeAgent]:
    port = free_port()
    settings = AgentSettings(TIMINGS, {"method": "recording"}, port, "unit-secret")
    made: list[Agent] = []

    def make(host: str) -> Agent:
        agent = Agent(inventory.host(host), inventory, settings, etcd_settings, RecordingWatchdog(), no_libvirt)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        if agent.session.id and not agent._stop.is_set():
            agent.stop()


def state(cluster: Cluster, host: str) -> AgentState | None:
    kv = cluster.get(state_key(cluster.settings.prefix, host))
    return AgentState.parse(host, kv.value) if kv else None


def test_an_agent_takes_its_lease_arms_its_watchdog_and_only_then_says_running(
    make_agent: MakeAgent, etcd_settings: EtcdSettings
) -> None:
    agent = make_agent("host1")
    agent.start()
    cluster = Cluster(etcd_settings)
    record = state(cluster, "host1")
    assert recorded(agent).calls == ["arm"]
    assert record is not None and record.state == RUNNING and record.watchdog_timeout == 3
    poll_until(lambda: cluster.get(live_key(etcd_settings.prefix, "host1")) is not None, 10, "its view published")
    poll_until(lambda: recorded(agent).feeds >= 2, 10, "the watchdog fed")


def test_a_clean_stop_records_stopped_then_revokes_then_disarms(
    make_agent: MakeAgent, etcd_settings: EtcdSettings
) -> None:
    agent = make_agent("host1")
    agent.start()
    cluster = Cluster(etcd_settings)
    poll_until(lambda: cluster.get(live_key(etcd_settings.prefix, "host1")) is not None, 10, "its view published")
    assert agent.stop() is True
    record = state(cluster, "host1")
    assert record is not None and record.state == STOPPED
    assert cluster.get(live_key(etcd_settings.prefix, "host1")) is None
    assert recorded(agent).calls == ["arm", "disarm"]
    verdict, why = AgentView(cluster).self_fenced("host1", TIMINGS, lambda: False)
    assert verdict is False and "agent is stopped" in why


def test_an_agent_that_lost_its_lease_while_its_peers_hold_theirs_is_isolated_and_stops_feeding(
    make_agent: MakeAgent,
) -> None:
    agents = [make_agent(h) for h in ("host1", "host2", "host3")]
    for agent in agents:
        agent.start()
    lonely = agents[0]
    lonely.reaches_etcd = lambda: False  # type: ignore[method-assign]
    feed, why = lonely.decide()
    assert not feed and "host2, host3 reach etcd: this host is the isolated one" in why


def test_an_agent_whose_peers_lost_etcd_too_keeps_feeding_the_store_failed(make_agent: MakeAgent) -> None:
    agents = [make_agent(h) for h in ("host1", "host2", "host3")]
    for agent in agents:
        agent.start()
    for agent in agents:
        agent.reaches_etcd = lambda: False  # type: ignore[method-assign]
    feed, why = agents[0].decide()
    assert feed and "the store failed" in why


def test_an_agent_cut_off_from_its_peers_and_etcd_stops_feeding(make_agent: MakeAgent) -> None:
    lonely = make_agent("host1")
    lonely.start()
    lonely.reaches_etcd = lambda: False  # type: ignore[method-assign]
    feed, why = lonely.decide()
    assert not feed and "no answer from host2, host3" in why
