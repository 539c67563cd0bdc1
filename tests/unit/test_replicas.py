"""Replicas of evac on one real etcd: one leader, agreement before a failover, and nothing
decided without etcd.

Each replica here is what ``evac serve`` builds: a client, a session lease and
:class:`evac.replicas.Replicas`. Leases are 2 s (tests.etcdserver), so a lost lease
takes seconds, not minutes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from evac.coordination import Agreement
from evac.etcdclient import Cluster, EtcdSettings
from evac.etcdsession import Session
from evac.events import Event
from evac.metrics import Metrics
from evac.replicas import Replicas
from evac.states import EventKind, Health
from tests.conftest import poll_until
from tests.etcdserver import EtcdServer

TIMEOUT = 15.0


class Replica:
    def __init__(self, settings: EtcdSettings, name: str) -> None:
        self.cluster = Cluster(settings)
        self.session = Session(self.cluster, settings.lease_ttl, name=name)
        self.session.start()
        self.replicas = Replicas(self.cluster, self.session, name=name)
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.replicas.start(self.record)

    def record(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind for e in self.events]

    def stop(self) -> None:
        self.replicas.stop()
        self.session.stop(revoke=True)
        self.cluster.close()


Start = Callable[[int], list[Replica]]


@pytest.fixture
def start(etcd_settings: EtcdSettings) -> Iterator[Start]:
    started: list[Replica] = []

    def make(count: int) -> list[Replica]:
        made = [Replica(etcd_settings, f"r{len(started) + i + 1}") for i in range(count)]
        started.extend(made)
        return made

    yield make
    for replica in started:
        replica.stop()


def leaders(replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if r.replicas.leads()]


def one_leader(replicas: list[Replica]) -> Replica:
    poll_until(lambda: len(leaders(replicas)) == 1, TIMEOUT, "exactly one leader")
    return leaders(replicas)[0]


def test_of_three_replicas_exactly_one_leads_and_says_so(start: Start) -> None:
    replicas = start(3)
    leader = one_leader(replicas)
    assert leader.replicas.leadership.revision > 0
    assert EventKind.CLUSTER_LEADER in leader.kinds()
    poll_until(
        lambda: all(r.replicas.status()["leader_is"] == leader.session.owner for r in replicas),
        TIMEOUT,
        "every replica knows who leads",
    )


def test_a_leader_that_stops_hands_over_at_once_to_a_leader_with_a_newer_revision(start: Start) -> None:
    replicas = start(2)
    first = one_leader(replicas)
    revision = first.replicas.leadership.revision
    first.replicas.stop()
    second = one_leader([r for r in replicas if r is not first])
    assert second.replicas.leadership.revision > revision
    assert EventKind.CLUSTER_FOLLOWER in first.kinds()


def test_a_leader_cut_off_from_etcd_stops_leading_by_its_own_clock(start: Start, etcd: EtcdServer) -> None:
    replicas = start(1)
    leader = one_leader(replicas)
    with etcd.frozen():
        poll_until(lambda: not leader.replicas.leads(), TIMEOUT, "the leader steps down without etcd")
        assert leader.session.deadline() > 0
    one_leader(replicas)  # etcd back: a leader again


def test_only_the_leader_may_fail_a_host_over(start: Start) -> None:
    replicas = start(2)
    leader = one_leader(replicas)
    follower = next(r for r in replicas if r is not leader)
    for replica in replicas:
        replica.replicas.publish("host1", Health.DOWN, "libvirt connection lost")
    poll_until(lambda: leader.replicas.agreed_down("host1").ok, TIMEOUT, "both views published")
    refused = follower.replicas.agreed_down("host1")
    assert not refused.ok and "does not lead" in refused.why


def test_a_host_is_failed_over_only_when_a_majority_of_replicas_sees_it_dead(start: Start) -> None:
    replicas = start(3)
    leader = one_leader(replicas)
    others = [r for r in replicas if r is not leader]
    for replica in replicas:
        replica.replicas.publish("host1", Health.UP, "")
    leader.replicas.publish("host1", Health.DOWN, "unreachable from here")
    poll_until(lambda: "1 of 3" in leader.replicas.agreed_down("host1").why, TIMEOUT, "three views, one down")
    assert not leader.replicas.agreed_down("host1").ok
    others[0].replicas.publish("host1", Health.DOWN, "unreachable from here too")
    poll_until(lambda: leader.replicas.agreed_down("host1").ok, TIMEOUT, "two of three see host1 down")
    assert leader.replicas.agreed_down("host1").why == "2 of 3 replicas see host1 down"


def test_a_replica_that_dies_has_no_say_any_more(start: Start) -> None:
    replicas = start(3)
    leader = one_leader(replicas)
    dead, alive = [r for r in replicas if r is not leader]
    for replica in replicas:
        replica.replicas.publish("host1", Health.UP, "")
    leader.replicas.publish("host1", Health.DOWN, "unreachable")
    poll_until(lambda: "1 of 3" in leader.replicas.agreed_down("host1").why, TIMEOUT, "three views")
    dead.stop()  # its lease is revoked, and its views go with it
    alive.replicas.publish("host1", Health.DOWN, "unreachable")
    poll_until(lambda: leader.replicas.agreed_down("host1").ok, TIMEOUT, "two of the two live replicas")


def test_without_etcd_nothing_is_agreed_and_an_alert_says_so_until_it_returns(start: Start, etcd: EtcdServer) -> None:
    replicas = start(1)
    replica = one_leader(replicas)
    replica.replicas.publish("host1", Health.DOWN, "unreachable")
    poll_until(lambda: replica.replicas.agreed_down("host1").ok, TIMEOUT, "one replica of one")
    with etcd.frozen():
        poll_until(lambda: EventKind.CLUSTER_UNAVAILABLE in replica.kinds(), TIMEOUT, "the alert")
        assert not replica.replicas.agreed_down("host1").ok
        assert replica.replicas.status()["etcd"] == "unavailable"
    poll_until(lambda: EventKind.CLUSTER_AVAILABLE in replica.kinds(), TIMEOUT, "etcd back")
    poll_until(lambda: replica.replicas.agreed_down("host1").ok, TIMEOUT, "agreement again")
    alert = next(e for e in replica.events if e.kind == EventKind.CLUSTER_UNAVAILABLE)
    assert alert.data["level"] == "alert"


def test_metrics_say_whether_this_replica_leads_and_whether_etcd_answers(start: Start, etcd: EtcdServer) -> None:
    (replica,) = start(1)
    one_leader([replica])
    metrics = Metrics()
    metrics.watch_coordination(replica.replicas)

    def value(name: str) -> float:
        (sample,) = [
            s for m in text_string_to_metric_families(metrics.text().decode()) for s in m.samples if s.name == name
        ]
        return float(sample.value)

    assert (value("evac_cluster_leader"), value("evac_cluster_available")) == (1.0, 1.0)
    with etcd.frozen():
        poll_until(lambda: value("evac_cluster_available") == 0.0, TIMEOUT, "etcd unavailable in the metrics")
        poll_until(lambda: value("evac_cluster_leader") == 0.0, TIMEOUT, "no longer leading in the metrics")


def test_the_last_replica_standing_of_several_never_fences_on_its_own_view(start: Start) -> None:
    replicas = start(3)
    leader = one_leader(replicas)
    for replica in replicas:
        replica.replicas.publish("host1", Health.UP, "")
    poll_until(lambda: "of 3" in leader.replicas.agreed_down("host1").why, TIMEOUT, "three views seen")
    for replica in replicas:
        if replica is not leader:
            replica.stop()  # two of three replicas gone (or cut off etcd)
    leader.replicas.publish("host1", Health.DOWN, "unreachable from here")
    poll_until(lambda: "1 of 1" in leader.replicas.agreed_down("host1").why, TIMEOUT, "its own view alone")
    assert leader.replicas.agreed_down("host1") == Agreement(False, "1 of 1 replicas see host1 down; 2 must")
