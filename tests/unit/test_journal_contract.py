"""The journal's contract, held to by both backends: every test runs on a SQLite file and
on a real etcd, with two or three controllers (processes) sharing the journal."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from evac.errors import LockedError, OwnershipLost
from evac.etcdjournal import EtcdJournal
from evac.events import Event
from evac.journal import Journal
from evac.states import HostMode, ItemState, JobState, StepState
from tests.conftest import poll_until
from tests.unit.conftest import Controllers, open_controllers


def new_job(journal: Journal, lock: str | None = None, target: str = "host3") -> int:
    return journal.create_job("maintenance", "runbooks/maintenance.yaml", {"host": target}, target, False, lock)


# ---------------------------------------------------------------- jobs
def test_a_new_job_runs_owned_by_its_creator(controllers: Controllers) -> None:
    a = controllers.start()
    job_id = a.create_job("drain", "runbooks/drain.yaml", {"host": "host2", "n": [1, 2]}, "host2", True, "host:host2")
    job = a.job(job_id)
    assert job is not None
    assert (job.runbook, job.source, job.params, job.target) == (
        "drain",
        "runbooks/drain.yaml",
        {"host": "host2", "n": [1, 2]},
        "host2",
    )
    assert (job.state, job.dry_run, job.lock, job.owner) == (JobState.RUNNING, True, "host:host2", controllers.owner(a))
    assert not job.orphaned and not job.finished and not job.cancel_requested
    assert a.job(job_id + 1000) is None


def test_jobs_are_listed_newest_first_and_unfinished_ones_oldest_first(controllers: Controllers) -> None:
    a = controllers.start()
    first, second, third = new_job(a), new_job(a), new_job(a)
    assert first < second < third
    assert [j.id for j in a.jobs(limit=2)] == [third, second]
    a.finish_job(second, JobState.FAILED, "boom")
    assert [j.id for j in a.unfinished_jobs()] == [first, third]
    finished = a.job(second)
    assert finished is not None and (finished.state, finished.error, finished.finished) == (
        JobState.FAILED,
        "boom",
        True,
    )


def test_a_cancel_request_is_seen_by_every_controller(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    b.request_cancel(job_id)
    job = a.job(job_id)
    assert job is not None and job.cancel_requested


def test_a_lock_is_exclusive_across_controllers_until_its_job_finishes(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a, lock="host:host3")
    with pytest.raises(LockedError, match=rf"^already running: job {job_id} holds host:host3$"):
        new_job(b, lock="host:host3")
    assert new_job(b, lock="host:host4") > job_id  # another lock is free
    a.finish_job(job_id, JobState.SUCCEEDED)
    assert new_job(b, lock="host:host3") > job_id


# ---------------------------------------------------------------- ownership
def test_a_live_controllers_job_is_not_orphaned_and_cannot_be_claimed(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    job = b.job(job_id)
    assert job is not None and not job.orphaned
    assert not b.claim(job_id)


def test_a_dead_controllers_job_is_orphaned_and_claimed_by_one(controllers: Controllers) -> None:
    a, b, c = controllers.start(), controllers.start(), controllers.start()
    job_id = new_job(a)
    controllers.kill(a)
    assert [j.orphaned for j in b.unfinished_jobs()] == [True]
    assert b.claim(job_id)
    job = c.job(job_id)
    assert job is not None and job.owner == controllers.owner(b) and not job.orphaned
    assert not c.claim(job_id)  # b lives
    assert b.claim(job_id)  # claiming one's own job again is no harm


def test_two_controllers_claiming_one_orphan_at_once_exactly_one_wins(controllers: Controllers) -> None:
    a, b, c = controllers.start(), controllers.start(), controllers.start()
    job_id = new_job(a)
    controllers.kill(a)
    start = threading.Barrier(2)
    wins: list[bool] = []

    def claim(journal: Journal) -> None:
        start.wait()
        wins.append(journal.claim(job_id))

    threads = [threading.Thread(target=claim, args=(j,)) for j in (b, c)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False, True]


def test_a_released_job_is_claimed_at_once(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    a.release(job_id)
    job = b.job(job_id)
    assert job is not None and job.owner == "" and job.orphaned
    assert b.claim(job_id)


def test_a_finished_job_cannot_be_claimed(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    a.finish_job(job_id, JobState.SUCCEEDED)
    controllers.kill(a)
    assert not b.claim(job_id)


def test_fence_token_is_the_leader_keys_revision(controllers: Controllers) -> None:
    a = controllers.start()
    job_id = new_job(a)
    if not isinstance(a, EtcdJournal):
        assert a.fence_token(job_id) == 0  # one process owns an embedded journal
        return
    assert a.fence_token(job_id) == 0  # nobody leads yet
    revision = a.cluster.put(f"{a.p}leader", a.session.owner)
    assert a.fence_token(job_id) == revision
    assert a.fence_token(None) == revision


def test_fence_token_refuses_once_another_controller_owns_the_job(etcd_controllers: Controllers) -> None:
    controllers = etcd_controllers
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    a.release(job_id)
    assert b.claim(job_id)
    with pytest.raises(OwnershipLost, match=rf"^job {job_id}: owned by {controllers.owner(b)} now"):
        a.fence_token(job_id)
    assert b.fence_token(job_id) == 0


def test_fence_token_refuses_when_the_lease_is_no_longer_held(etcd_controllers: Controllers) -> None:
    controllers = etcd_controllers
    a = controllers.start()
    job_id = new_job(a)
    controllers.kill(a)
    with pytest.raises(OwnershipLost, match=rf"^job {job_id}: this controller's etcd lease is about to expire"):
        a.fence_token(job_id)


def test_a_deposed_owner_cannot_write_the_new_owners_job(etcd_controllers: Controllers) -> None:
    controllers = etcd_controllers
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    a.save_step(job_id, "fence", StepState.RUNNING, {})
    a.release(job_id)  # as if its lease had lapsed during a pause
    assert b.claim(job_id)
    writes: list[Any] = [
        lambda: a.save_step(job_id, "fence", StepState.FAILED, {}),
        lambda: a.save_item(job_id, "fence", "vm1", ItemState.FAILED, {}),
        lambda: a.add_event(Event("progress", job_id, message="stale")),
        lambda: a.finish_job(job_id, JobState.FAILED, "stale"),
    ]
    for write in writes:
        with pytest.raises(OwnershipLost, match=rf"^job {job_id}: owned by"):
            write()
    step = b.step(job_id, "fence")
    job = b.job(job_id)
    assert step is not None and step.state == StepState.RUNNING
    assert job is not None and job.state == JobState.RUNNING and b.events(job_id) == []
    b.finish_job(job_id, JobState.SUCCEEDED)


def test_a_released_job_takes_writes_and_a_finished_one_from_its_finisher(controllers: Controllers) -> None:
    a = controllers.start()
    job_id = new_job(a)
    a.release(job_id)
    a.save_step(job_id, "fence", StepState.RUNNING, {})
    a.finish_job(job_id, JobState.SUCCEEDED)
    a.add_event(Event("job.finished", job_id))
    a.finish_job(job_id, JobState.FAILED, "again")
    job = a.job(job_id)
    assert job is not None and (job.state, job.error) == (JobState.FAILED, "again")


def test_a_deposed_owner_cannot_rewrite_a_job_the_new_owner_finished(etcd_controllers: Controllers) -> None:
    a, b = etcd_controllers.start(), etcd_controllers.start()
    job_id = new_job(a)
    a.release(job_id)  # as if a's lease had lapsed during a pause
    assert b.claim(job_id)
    b.finish_job(job_id, JobState.SUCCEEDED)
    finished_by_b = rf"^job {job_id}: finished by {etcd_controllers.owner(b)}"
    with pytest.raises(OwnershipLost, match=finished_by_b):
        a.finish_job(job_id, JobState.FAILED, "woke up late")
    with pytest.raises(OwnershipLost, match=finished_by_b):
        a.save_step(job_id, "fence", StepState.FAILED, {})
    a.add_event(Event("job.interrupted", job_id))  # what happened is still told
    job = b.job(job_id)
    assert job is not None and (job.state, job.error) == (JobState.SUCCEEDED, "")


# ---------------------------------------------------------------- steps, items, events
def test_steps_and_items_round_trip(controllers: Controllers) -> None:
    a = controllers.start()
    job_id = new_job(a)
    assert a.step(job_id, "migrate") is None and a.items(job_id, "migrate") == {}
    a.save_step(job_id, "migrate", StepState.RUNNING, {})
    a.save_step(job_id, "migrate", StepState.PARTIAL, {"moved": ["vm1"]}, "vm2 failed")
    a.save_item(job_id, "migrate", "vm1", ItemState.SUCCEEDED, {"to": "host2"}, attempts=1)
    a.save_item(job_id, "migrate", "vm/2", ItemState.FAILED, {}, "no target", attempts=3)
    a.save_item(job_id, "migrate-extra", "vm3", ItemState.RUNNING, {})
    step = a.step(job_id, "migrate")
    assert step is not None
    assert (step.step, step.state, step.outputs, step.error) == (
        "migrate",
        StepState.PARTIAL,
        {"moved": ["vm1"]},
        "vm2 failed",
    )
    items = a.items(job_id, "migrate")
    assert sorted(items) == ["vm/2", "vm1"]
    assert (items["vm/2"].state, items["vm/2"].error, items["vm/2"].attempts) == (ItemState.FAILED, "no target", 3)
    assert items["vm1"].outputs == {"to": "host2"}


def test_events_come_in_order_and_after_skips_the_ones_seen(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    for n in range(3):
        a.add_event(Event("progress", job_id, "s", "vm1", f"m{n}", {"n": n}, ts=1000.0 + n))
    b.add_event(Event("host.down", 0, message="monitor"))  # no job's: any controller writes it
    events = b.events(job_id)
    assert [(e.kind, e.step, e.item, e.message, e.data, e.ts) for _, e in events] == [
        ("progress", "s", "vm1", f"m{n}", {"n": n}, 1000.0 + n) for n in range(3)
    ]
    ids = [i for i, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [e.message for _, e in b.events(job_id, after=ids[0])] == ["m1", "m2"]
    assert b.events(job_id, after=ids[-1]) == []
    assert [e.message for _, e in a.events(0)] == ["monitor"]


def test_the_first_approval_of_a_step_is_kept(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    assert a.approved_by(job_id, "fence") is None
    b.approve(job_id, "fence", "alice")
    a.approve(job_id, "fence", "bob")
    assert a.approved_by(job_id, "fence") == "alice"


def test_the_audit_log_is_newest_first_with_a_limit(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    for n in range(4):
        (a if n % 2 else b).audit(f"user{n}", "host.fence", "host3", {"n": n} if n else None)
    log = a.audit_log(limit=3)
    assert [(r.actor, r.action, r.target, r.detail) for r in log] == [
        (f"user{n}", "host.fence", "host3", {"n": n}) for n in (3, 2, 1)
    ]
    assert a.audit_log()[-1].detail == {}


# ---------------------------------------------------------------- hosts, brake, slots
def test_host_states_are_kept_until_enabled(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    a.set_host_state("host2", HostMode.MAINTENANCE, "disk swap", "alice")
    a.set_host_state("host3", HostMode.FENCED, "dead", "monitor")
    states = b.host_states()
    assert sorted(states) == ["host2", "host3"]
    assert (states["host2"].state, states["host2"].reason, states["host2"].actor) == (
        HostMode.MAINTENANCE,
        "disk swap",
        "alice",
    )
    b.set_host_state("host2", HostMode.ENABLED, "", "bob")
    assert sorted(a.host_states()) == ["host3"]


def test_the_brake_holds_until_released_from_any_controller(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    assert a.brake() is None and not a.release_brake()
    a.engage_brake("3 hosts down in 60 s")
    b.engage_brake("a later reason")
    brake = b.brake()
    assert brake is not None and brake.reason == "3 hosts down in 60 s"
    assert b.release_brake()
    assert a.brake() is None and not a.release_brake()


def test_ha_stays_disarmed_for_every_controller_until_one_arms_it(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    assert a.disarmed() is None and a.arm() is None
    assert a.disarm("cluster-wide switch firmware", "cli:alice")
    assert not b.disarm("a later reason", "cli:bob")
    held = b.disarmed()
    assert held is not None and (held.reason, held.actor) == ("cluster-wide switch firmware", "cli:alice")
    armed = b.arm()
    assert armed is not None and armed.reason == "cluster-wide switch firmware"
    assert a.disarmed() is None and a.arm() is None


def test_a_slot_admits_up_to_its_limit_across_controllers(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    assert a.take_slot("in:host2", 2, "1:vm1")
    assert b.take_slot("in:host2", 2, "7:vm9")
    assert not b.take_slot("in:host2", 2, "7:vm10")
    assert a.take_slot("in:host2", 2, "1:vm1")  # the same place again
    assert b.take_slot("in:host3", 2, "7:vm10")  # another host's slot is its own
    a.release_slot("in:host2", "1:vm1")
    assert b.take_slot("in:host2", 2, "7:vm10")


def test_a_dead_controllers_places_are_free_again(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    assert a.take_slot("in:host2", 1, "1:vm1")
    assert not b.take_slot("in:host2", 1, "2:vm2")
    controllers.kill(a)
    assert b.take_slot("in:host2", 1, "2:vm2")


# ---------------------------------------------------------------- definitions, facts, seen keys
def test_definitions_replace_the_last_snapshot_and_an_empty_host_is_not_unknown(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    assert a.definitions("host2") == {} and a.snapshot_taken("host2") is None
    before = time.time()
    a.save_definitions("host2", {"vm1": "<domain>1</domain>", "vm2": "<domain>2</domain>"})
    a.save_definitions("host2", {"vm2": "<domain>2'</domain>"})
    assert b.definitions("host2") == {"vm2": "<domain>2'</domain>"}
    a.save_definitions("host3", {})
    taken = b.snapshot_taken("host3")
    assert b.definitions("host3") == {} and taken is not None and taken >= before - 1


def test_facts_are_recalled_until_forgotten_and_a_jobs_facts_end_with_it(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    job_id = new_job(a)
    a.remember("vm1/needs", "postcopy")
    a.remember("vm1/failed", "host4", job=job_id)
    assert b.recall("vm1/needs") == "postcopy" and b.recall("vm1/failed") == "host4"
    a.finish_job(job_id, JobState.SUCCEEDED)
    assert b.recall("vm1/failed") is None and b.recall("vm1/needs") == "postcopy"
    b.forget("vm1/needs")
    assert a.recall("vm1/needs") is None


def test_a_key_is_seen_first_once_by_every_controller_within_its_ttl(controllers: Controllers) -> None:
    a, b = controllers.start(), controllers.start()
    key = f"nonce:{uuid.uuid4().hex}"
    assert a.first_seen(key, 60)
    assert not b.first_seen(key, 60)
    b.forget_seen(key)
    assert a.first_seen(key, 1)
    assert not b.first_seen(key, 1)
    poll_until(lambda: b.first_seen(key, 60), 5, "the key's one-second ttl to lapse")


# ---------------------------------------------------------------- retention
def test_prune_removes_old_finished_jobs_events_and_old_audit_rows(controllers: Controllers) -> None:
    a = controllers.start()
    done, running = new_job(a), new_job(a)
    for job_id in (done, running):
        a.add_event(Event("progress", job_id, ts=1.0))
        a.add_event(Event("progress", job_id, ts=2.0))
    a.add_event(Event("host.down", 0, ts=1.0))
    a.add_event(Event("host.down", 0, ts=time.time() + 3600))
    a.finish_job(done, JobState.SUCCEEDED)
    a.audit("alice", "host.fence", "host3")
    a.audit("bob", "host.fence", "host4")
    assert a.prune(events_before=time.time() - 3600, audit_before=0) == (1, 0)  # only the old monitor event
    assert a.prune(events_before=time.time() + 60, audit_before=time.time() + 60) == (2, 2)
    assert a.events(done) == [] and len(a.events(running)) == 2 and len(a.events(0)) == 1  # a newer one stays
    assert a.audit_log() == []
    assert a.job(done) is not None  # job rows are kept


# ---------------------------------------------------------------- copy between backends
def fill(journal: Journal) -> dict[str, int]:
    """A journal with one record of every kind; the ids of its jobs."""
    done = journal.create_job("drain", "d.yaml", {"host": "host2"}, "host2", False, "host:host2")
    journal.save_step(done, "migrate", StepState.SUCCEEDED, {"moved": 2})
    journal.save_item(done, "migrate", "vm1", ItemState.SUCCEEDED, {"to": "host3"}, attempts=2)
    for n in range(3):
        journal.add_event(Event("progress", done, "migrate", "vm1", f"m{n}", {"n": n}, ts=100.0 + n))
    journal.approve(done, "migrate", "alice")
    journal.finish_job(done, JobState.SUCCEEDED)
    running = journal.create_job("failover", "f.yaml", {}, "host3", False, "host:host3")
    journal.remember("vm1/needs", "postcopy")
    for n in range(3):
        journal.audit(f"user{n}", "host.fence", "host3", {"n": n})
    journal.set_host_state("host4", HostMode.MAINTENANCE, "disk", "alice")
    journal.engage_brake("storm")
    journal.save_definitions("host2", {"vm1": "<domain/>"})
    journal.save_definitions("host5", {})
    return {"done": done, "running": running}


@pytest.mark.parametrize(
    ("source_backend", "target_backend"),
    [("sqlite", "etcd"), ("etcd", "sqlite"), ("sqlite", "sqlite"), ("etcd", "etcd")],
)
def test_dump_then_load_keeps_every_record_its_id_and_its_order(
    source_backend: str, target_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sources, targets = (open_controllers(b, request, tmp_path) for b in (source_backend, target_backend))
    try:
        source, target = sources.start(), targets.start()
        for _ in range(2):  # ids that do not start at 1
            source.finish_job(new_job(source), JobState.CANCELLED)
        ids = fill(source)
        target.load(source.dump())
        assert [(j.id, j.state, j.lock, j.created, j.updated) for j in target.jobs()] == [
            (j.id, j.state, j.lock, j.created, j.updated) for j in source.jobs()
        ]
        moved = target.job(ids["running"])
        assert moved is not None and moved.owner == "" and moved.orphaned
        assert target.claim(ids["running"])
        with pytest.raises(LockedError, match=rf"job {ids['running']} holds host:host3"):
            target.create_job("failover", "f.yaml", {}, "host3", False, "host:host3")
        assert new_job(target) > ids["running"]
        assert target.step(ids["done"], "migrate") == source.step(ids["done"], "migrate")
        assert target.items(ids["done"], "migrate") == source.items(ids["done"], "migrate")
        assert [e for _, e in target.events(ids["done"])] == [e for _, e in source.events(ids["done"])]
        assert target.approved_by(ids["done"], "migrate") == "alice"
        assert target.audit_log() == source.audit_log()
        assert target.host_states() == source.host_states()
        assert target.brake() == source.brake()
        assert target.definitions("host2") == {"vm1": "<domain/>"}
        assert target.snapshot_taken("host5") == source.snapshot_taken("host5")
        assert target.recall("vm1/needs") == "postcopy"
    finally:
        sources.close()
        targets.close()


def test_load_refuses_a_journal_that_has_jobs(controllers: Controllers) -> None:
    from evac.errors import ConfigError

    a = controllers.start()
    new_job(a)
    with pytest.raises(ConfigError, match="already has jobs; copy only into an empty journal"):
        a.load(iter([]))
