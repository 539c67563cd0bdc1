"""evac on a real 3-member etcd, with one ``evac serve`` replica inside each lab host:
killing or cutting a host kills or cuts the replica and the etcd member on it too.

Outcomes are checked outside evac where they can be: where guests run (libvirt on every
host), which QEMU took incoming migrations (its logs), and who powered what off with
which fencing token (the lab power switch's own log). Times are the bench's business;
deadlines here are only generous bounds.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from evac.lab import Lab
from evac.states import HostMode, JobState
from tests.conftest import poll_until
from tests.integration.replicas import SETTLE, TOKEN, Replicas


@pytest.fixture(scope="module")
def replicas(ha_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    token_file = tmp_path_factory.mktemp("ha") / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    ha = Replicas(ha_lab, token_file)
    for host in ha.hosts:
        ha.start(host)
    ha.leader()
    yield ha
    for host in ha.hosts:
        ha.lab.stop_serve(host, signal.SIGKILL)
    ha.app.close()


@pytest.fixture
def ha(replicas: Replicas) -> Iterator[Replicas]:
    """The replicas, every host powered, in service and with its replica, after each test."""
    yield replicas
    for host in replicas.hosts:
        if replicas.lab.etcd_is_cut(host):
            replicas.lab.heal_etcd(host)
        if not replicas.lab.etcd_health().get(host) and replicas.lab.power_state(host) == "on":
            replicas.lab.start_etcd(host)
    for host in replicas.lab.host_names():
        replicas.revive(host)
    replicas.remove_guests()  # once every host answers again: a powered-off host still defines its guests
    assert replicas.journal.brake() is None, "a storm brake engaged during the test"


def test_a_killed_leader_is_replaced_and_its_successor_fails_a_dead_host_over(ha: Replicas) -> None:
    name = ha.guest(ha.spare, "ha-a")
    old = ha.leader()
    ha.lab.stop_serve(old, signal.SIGKILL)
    ha.leader([h for h in ha.hosts if h != old])
    killed = time.time()
    ha.lab.kill_host(ha.spare)
    ha.runs_once_elsewhere(name, not_on=ha.spare)
    assert len(ha.failovers(ha.spare, killed)) == 1
    assert ha.journal.host_states()[ha.spare].state == HostMode.FENCED


def test_the_leaders_own_host_dying_with_guests_is_failed_over_once_by_the_new_leader(ha: Replicas) -> None:
    old = ha.leader()
    names = [ha.guest(old, f"ha-b{i}") for i in range(2)]
    revision = (ha.health(old) or {})["cluster"]["revision"]
    killed = time.time()
    ha.lab.kill_host(old)
    new = ha.leader([h for h in ha.hosts if h != old])
    for name in names:
        ha.runs_once_elsewhere(name, not_on=old)
    assert len(ha.failovers(old, killed)) == 1
    (fence,) = [e for e in ha.power_offs(old, killed) if e["accepted"]]
    assert fence["caller"].startswith(new) and fence["token"] > revision


def test_a_drain_whose_leader_is_killed_midway_is_finished_by_another_replica(ha: Replicas) -> None:
    leader = ha.leader()
    source = next(h for h in ha.hosts if h != leader)
    names = [ha.guest(source, f"ha-c{i}") for i in range(4)]
    answer = httpx.post(
        f"{ha.lab.serve_url(leader)}/hooks/evacuate",
        json={"host": source, "reason": "ha test", "mode": "drain"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job = int(answer.json()["job"])
    poll_until(
        lambda: any(i.state == "succeeded" for i in ha.journal.items(job, "migrate").values()),
        SETTLE,
        "a first migration done",
    )
    ha.lab.stop_serve(leader, signal.SIGKILL)
    poll_until(lambda: (ha.journal.job(job) or pytest.fail("job gone")).finished, SETTLE * 2, "the drain finished")
    record = ha.journal.job(job)
    assert record is not None and record.state == JobState.SUCCEEDED, record
    plan = ha.journal.step(job, "plan")
    assert plan is not None
    planned = {move["guest"]: move["target"] for move in plan.outputs["moves"]}
    for name in names:
        assert ha.running(name) == [planned[name]]
        assert incoming_migrations(ha.lab, name) == 1, f"{name} was migrated more than once"
    report = ha.journal.step(job, "report")
    assert report is not None
    assert sorted((row["guest"], row["result"]) for row in report.outputs["rows"]) == [(n, "moved") for n in names]


def test_a_leader_cut_off_from_etcd_stops_acting_and_another_replica_takes_over(ha: Replicas) -> None:
    name = ha.guest(ha.spare, "ha-d")
    old = ha.leader()
    ha.lab.cut_etcd(old)
    cut_at = time.time()
    new = ha.leader([h for h in ha.hosts if h != old])
    poll_until(lambda: not ha.leads(old), SETTLE, f"{old} knows it no longer leads")
    ha.lab.kill_host(ha.spare)  # the cut replica still sees this: it must not act on it
    ha.runs_once_elsewhere(name, not_on=ha.spare)
    fences = ha.power_offs(ha.spare, cut_at)
    assert [(e["caller"].split(":")[0], e["accepted"]) for e in fences] == [(new, True)]
    assert len(ha.failovers(ha.spare, cut_at)) == 1
    restarts = [a for a in ha.journal.audit_log(200) if a.action == "run" and a.ts >= cut_at]
    assert all(not a.actor.startswith(old) for a in restarts)


def test_losing_etcd_quorum_fences_and_restarts_nothing_until_it_returns(ha: Replicas) -> None:
    first, second, _ = ha.hosts
    name = ha.guest(ha.spare, "ha-e")
    ha.lab.kill_etcd(first)  # one member of three: nothing changes
    ha.leader()
    ha.journal.audit("test", "quorum", "one member down")
    ha.lab.kill_etcd(second)  # two of three: no quorum
    poll_until(
        lambda: all((ha.health(h) or {}).get("cluster", {}).get("etcd") == "unavailable" for h in ha.hosts),
        SETTLE,
        "every replica says etcd is unavailable",
    )
    killed = time.time()
    ha.lab.kill_host(ha.spare)
    lease = 3.0
    with pytest.raises(AssertionError, match="timed out"):  # three leases long, nothing may happen
        poll_until(lambda: ha.running(name) or ha.power_offs(ha.spare, killed), 3 * lease, "a restart or a fence")
    ha.lab.start_etcd(first)
    ha.lab.start_etcd(second)
    ha.runs_once_elsewhere(name, not_on=ha.spare)
    assert len(ha.failovers(ha.spare, killed)) == 1


def test_one_alert_posted_to_every_replica_at_once_starts_one_failover(ha: Replicas) -> None:
    host = ha.hosts[1]
    address = ha.inventory.host(host).address
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "evac",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HostDown", "instance": f"{address}:9100"},
                "annotations": {},
                "startsAt": "2026-11-27T07:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": f"ha-{time.time()}",
            }
        ],
    }
    answers: list[dict[str, Any]] = []

    def post(replica: str) -> None:
        response = httpx.post(
            f"{ha.lab.serve_url(replica)}/hooks/alertmanager",
            content=json.dumps(payload),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            timeout=30,
        )
        answers.append(response.json())

    posted = time.time()
    threads = [threading.Thread(target=post, args=(replica,)) for replica in ha.hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = [a["results"][0]["result"] for a in answers]
    assert results.count("accepted") == 1, answers
    (job,) = ha.failovers(host, posted)
    poll_until(lambda: (ha.journal.job(job) or pytest.fail("gone")).finished, SETTLE, "the failover ended")
    assert not ha.power_offs(host, posted), "a host that answers was fenced"


def incoming_migrations(lab: Lab, name: str) -> int:
    """QEMU processes started to receive ``name`` by migration, from every host's QEMU log."""
    count = 0
    for host in lab.host_names():
        log = lab.host_dir(host) / "log" / "qemu" / f"{name}.log"
        if log.exists():
            count += sum(1 for line in log.read_text().splitlines() if "-incoming" in line)
    return count
