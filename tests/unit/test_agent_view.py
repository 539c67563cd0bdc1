"""The leader's count of a host fenced by its watchdog, on a real etcd, with a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evac.agents import RUNNING, STOPPED, AgentState, AgentView, live_key, state_key
from evac.etcdclient import Cluster, EtcdSettings
from evac.selffence import Timings

TIMINGS = Timings(lease_ttl=3, watchdog_timeout=3, margin=2, peer_timeout=0.5, reset=0.5)


class Fleet:
    """Agents as etcd shows them: each a state record and, while alive, a leased live key."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.prefix = cluster.settings.prefix
        self.leases: dict[str, int] = {}

    def run(self, host: str, timeout: float = 3.0) -> None:
        self.leases[host] = self.cluster.grant(60)
        self.cluster.put(state_key(self.prefix, host), AgentState(host, RUNNING, timeout).record())
        self.cluster.put(live_key(self.prefix, host), "{}", self.leases[host])

    def lose_lease(self, host: str) -> None:
        self.cluster.revoke(self.leases.pop(host))

    def stop_cleanly(self, host: str) -> None:
        self.cluster.put(state_key(self.prefix, host), AgentState(host, STOPPED, 0, reason="agent stopped").record())
        self.lose_lease(host)


@pytest.fixture
def cluster(etcd_settings: EtcdSettings) -> Iterator[Cluster]:
    cluster = Cluster(etcd_settings)
    yield cluster
    cluster.close()


@pytest.fixture
def fleet(cluster: Cluster) -> Fleet:
    fleet = Fleet(cluster)
    for host in ("host1", "host2", "host3", "host4"):
        fleet.run(host)
    return fleet


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def silent() -> bool:
    return False


def gone_long_ago(cluster: Cluster, fleet: Fleet, host: str) -> AgentView:
    """A view that saw ``host``'s lease go, a minute ago by its clock."""
    clock = Clock()
    view = AgentView(cluster, clock)
    fleet.lose_lease(host)
    view.refresh()
    clock.now += 60
    return view


def test_a_host_is_counted_fenced_only_after_timeout_and_margin_from_its_lease_seen_gone(
    cluster: Cluster, fleet: Fleet
) -> None:
    clock = Clock()
    view = AgentView(cluster, clock)
    assert view.self_fenced("host1", TIMINGS, silent) == (None, "host1's agent still holds its lease")
    fleet.lose_lease("host1")
    verdict, why = view.self_fenced("host1", TIMINGS, silent)
    assert verdict is None and "fires within 5.0 s" in why
    clock.now += 4.9
    assert view.self_fenced("host1", TIMINGS, silent)[0] is None
    clock.now += 0.2
    verdict, why = view.self_fenced("host1", TIMINGS, silent)
    assert verdict is True and "3 of 3 other agents have held theirs since" in why


def test_a_controller_that_first_reads_after_the_deletion_times_from_its_own_first_read(
    cluster: Cluster, fleet: Fleet
) -> None:
    fleet.lose_lease("host1")
    clock = Clock()
    view = AgentView(cluster, clock)
    clock.now += 4.0
    assert view.self_fenced("host1", TIMINGS, silent)[0] is None  # first seen gone now: 5 s from here
    clock.now += 5.1
    assert view.self_fenced("host1", TIMINGS, silent)[0] is True


def test_a_cleanly_stopped_agent_never_counts_its_watchdog_is_disarmed(cluster: Cluster, fleet: Fleet) -> None:
    clock = Clock()
    view = AgentView(cluster, clock)
    fleet.stop_cleanly("host1")
    clock.now += 60
    verdict, why = view.self_fenced("host1", TIMINGS, silent)
    assert verdict is False and "agent is stopped" in why


def test_a_host_that_never_ran_an_agent_is_never_counted(cluster: Cluster, fleet: Fleet) -> None:
    verdict, why = AgentView(cluster).self_fenced("host9", TIMINGS, silent)
    assert verdict is False and "no evac agent ever ran on host9" in why


def test_when_most_agents_lost_etcd_together_nothing_counts_they_may_vouch_for_each_other(
    cluster: Cluster, fleet: Fleet
) -> None:
    clock = Clock()
    view = AgentView(cluster, clock)
    for host in ("host1", "host2", "host3"):
        fleet.lose_lease(host)
    view.refresh()
    clock.now += 60
    verdict, why = view.self_fenced("host1", TIMINGS, silent)
    assert verdict is None and "only 1 of 3 other agents hold their leases (2 must)" in why


def test_a_host_that_still_answers_is_not_counted(cluster: Cluster, fleet: Fleet) -> None:
    view = gone_long_ago(cluster, fleet, "host1")
    verdict, why = view.self_fenced("host1", TIMINGS, lambda: True)
    assert verdict is None and "still answers" in why


def test_an_agent_with_a_longer_watchdog_than_the_leader_waits_for_is_never_counted(
    cluster: Cluster, fleet: Fleet
) -> None:
    fleet.run("host1", timeout=30.0)
    verdict, why = AgentView(cluster).self_fenced("host1", TIMINGS, silent)
    assert verdict is False and "30 s watchdog, longer than agent.watchdog.timeout 3 s" in why


def test_a_lease_that_comes_back_restarts_the_count(cluster: Cluster, fleet: Fleet) -> None:
    clock = Clock()
    view = AgentView(cluster, clock)
    fleet.lose_lease("host1")
    view.refresh()
    clock.now += 4.0
    fleet.run("host1")
    view.refresh()
    fleet.lose_lease("host1")
    clock.now += 4.0
    assert view.self_fenced("host1", TIMINGS, silent)[0] is None


def test_peers_whose_leases_were_replaced_may_have_vouched_so_the_wait_runs_from_their_new_leases(
    cluster: Cluster, fleet: Fleet
) -> None:
    clock = Clock()
    view = AgentView(cluster, clock)
    fleet.lose_lease("host1")
    view.refresh()
    clock.now += 60
    for peer in ("host2", "host3"):  # each gave up its lease (it vouched) and took a new one
        fleet.lose_lease(peer)
        fleet.run(peer)
    verdict, why = view.self_fenced("host1", TIMINGS, silent, peers=("host2", "host3", "host4"))
    assert verdict is None and "its watchdog fires within 5.0 s" in why
    clock.now += 5.1
    assert view.self_fenced("host1", TIMINGS, silent, peers=("host2", "host3", "host4"))[0] is True


def test_a_host_once_counted_fenced_is_not_counted_again_until_its_agent_starts_anew(
    cluster: Cluster, fleet: Fleet
) -> None:
    view = gone_long_ago(cluster, fleet, "host1")
    assert view.self_fenced("host1", TIMINGS, silent)[0] is True
    assert view.unarm("host1", "counted fenced by its watchdog")
    verdict, why = view.self_fenced("host1", TIMINGS, silent)
    assert verdict is False and "unarmed" in why
    fleet.run("host1")
    fleet.lose_lease("host1")
    assert view.self_fenced("host1", TIMINGS, silent)[0] is None  # timed again from now


def test_peers_without_an_agent_count_as_not_holding(cluster: Cluster, fleet: Fleet) -> None:
    view = gone_long_ago(cluster, fleet, "host1")
    peers = ("host2", "host3", "host4", "host5", "host6", "host7")  # three with no agent at all
    verdict, why = view.self_fenced("host1", TIMINGS, silent, peers)
    assert verdict is None and "only 3 of 6" in why
