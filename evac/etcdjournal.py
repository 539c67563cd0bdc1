"""The distributed journal: the same records as ``evac.sqlitejournal``, kept on etcd so
every controller of a fleet shares them and a surviving one takes over a dead one's jobs.

Key layout (``{p}`` is the prefix, ``<id>`` a job id as ``%012d``; other names are
URL-quoted so a ``/`` in them cannot reach into another key)::

    {p}seq/job                  the last job id given out (create_job compares its mod_revision)
    {p}job/<id>                 the job's record (JSON)
    {p}running/<id>             the owner of an unfinished job ("" = released); gone once finished
    {p}lock/<name>              the id of the job that holds the lock
    {p}step/<id>/<step>         JSON
    {p}item/<id>/<step>/<key>   JSON
    {p}event/<id>/<uuid>        JSON; the event's id is the key's create_revision (monotonic)
    {p}approval/<id>/<step>     JSON
    {p}audit/<ns>-<uuid>        JSON; the row's id is its create_revision
    {p}host/<host>              JSON, only for hosts not ``enabled``
    {p}brake                    JSON
    {p}disarmed                 JSON: HA disarmed (reason, actor, since); read by the agents too
    {p}slot/<slot>              JSON holder -> owner, replaced by compare-and-swap on mod_revision
    {p}definitions/<host>       JSON: ts and domain XML by guest name
    {p}learned/<key>            JSON: value, ts, job_id
    {p}seen/<key>               attached to a lease of the key's ttl
    {p}sessions/<lease hex>     a live controller (evac.etcdsession)
    {p}leader                   the leader's key; its create_revision is the fencing token

A write for a job (step, item, event, finish) is one transaction that compares
``running/<id>`` with this controller's owner: a deposed owner that wakes up after a pause
gets :class:`~evac.errors.OwnershipLost` and cannot overwrite the new owner's state.

etcd keeps every revision until it is compacted: :meth:`EtcdJournal.prune` compacts up to
1000 revisions behind the head, but etcd should also run with ``--auto-compaction-mode``
and ``--auto-compaction-retention``, and be defragmented now and then (``etcdctl defrag``)
to give the space back to the filesystem.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from .errors import ConfigError, LockedError, OwnershipLost, TransientError
from .etcdclient import (
    KV,
    Cluster,
    TxnResult,
    absent,
    delete_op,
    get_op,
    mod_revision_is,
    present,
    put_op,
    value_is,
)
from .etcdsession import Session, owners_of, safety_margin, session_key
from .events import Event
from .journal import AuditRecord, BrakeState, Disarmed, HostState, ItemRecord, JobRecord, StepRecord
from .states import TERMINAL, HostMode, ItemState, JobState, StepState

TXN_OPS = 100  # etcd refuses a transaction of more than 128 operations (--max-txn-ops)
KEEP_REVISIONS = 1000  # history prune() leaves behind the head when it compacts
RETRIES = 20  # compare-and-swap attempts before a conflict is an error


def _id(job_id: int) -> str:
    return f"{job_id:012d}"


def _q(name: str) -> str:
    return quote(name, safe="")


def _kvs(result: TxnResult, index: int = 0) -> list[KV]:
    kvs: list[KV] = result.responses[index].get("kvs", []) if len(result.responses) > index else []
    return kvs


class EtcdJournal:
    def __init__(self, cluster: Cluster, session: Session) -> None:
        self.cluster = cluster
        self.session = session
        self.p = cluster.settings.prefix

    def close(self) -> None:
        """The session and the cluster belong to whoever made them; nothing to release here."""

    # ---------------------------------------------------------------- keys
    def _job_key(self, job_id: int) -> str:
        return f"{self.p}job/{_id(job_id)}"

    def _running(self, job_id: int) -> str:
        return f"{self.p}running/{_id(job_id)}"

    def _lock(self, name: str) -> str:
        return f"{self.p}lock/{_q(name)}"

    # ---------------------------------------------------------------- jobs
    def create_job(
        self, runbook: str, source: str, params: dict[str, Any], target: str, dry_run: bool, lock: str | None
    ) -> int:
        counter = f"{self.p}seq/job"
        nonce = uuid.uuid4().hex  # finds our own job again when a creation's answer was lost
        for _ in range(RETRIES):
            kv = self.cluster.get(counter)
            job_id = (int(kv.value) if kv else 0) + 1
            now = time.time()
            record = {
                "runbook": runbook,
                "source": source,
                "params": params,
                "target": target,
                "state": str(JobState.RUNNING),
                "dry_run": dry_run,
                "lock": lock,
                "owner": self.session.owner,
                "created": now,
                "updated": now,
                "error": "",
                "cancel_requested": False,
                "nonce": nonce,
            }
            compare = [mod_revision_is(counter, kv.mod_revision) if kv else absent(counter)]
            success = [
                put_op(counter, str(job_id)),
                put_op(self._job_key(job_id), json.dumps(record, default=str)),
                put_op(self._running(job_id), self.session.owner),
            ]
            if lock:
                compare.append(absent(self._lock(lock)))
                success.append(put_op(self._lock(lock), str(job_id)))
            result = self.cluster.txn(compare, success, [get_op(self._lock(lock))] if lock else [])
            if result.succeeded:
                return job_id
            held = _kvs(result)
            holder = int(held[0].value) if lock and held else job_id
            if self._created_by(holder, nonce):  # an earlier try committed; its answer was lost
                return holder
            if lock and held:
                raise LockedError(f"already running: job {holder} holds {lock}", holder)
        raise TransientError(f"etcd: could not create a job: {RETRIES} conflicting creations in a row; try again")

    def _created_by(self, job_id: int, nonce: str) -> bool:
        kv = self.cluster.get(self._job_key(job_id))
        return kv is not None and json.loads(kv.value).get("nonce") == nonce

    def _record(self, kv: KV, owners: dict[int, str], live: set[str]) -> JobRecord:
        r = json.loads(kv.value)
        job_id = int(kv.key.rsplit("/", 1)[1])
        owner = owners.get(job_id, r.get("owner", ""))
        return JobRecord(
            id=job_id,
            runbook=r["runbook"],
            source=r["source"],
            params=r["params"],
            target=r["target"],
            state=JobState(r["state"]),
            dry_run=bool(r["dry_run"]),
            lock=r.get("lock"),
            owner=owner,
            created=r["created"],
            updated=r["updated"],
            error=r.get("error", ""),
            cancel_requested=bool(r.get("cancel_requested", False)),
            owner_live=owner in live,
        )

    def _owners(self, running: list[KV]) -> dict[int, str]:
        return {int(kv.key.rsplit("/", 1)[1]): kv.value for kv in running}

    def job(self, job_id: int) -> JobRecord | None:
        result = self.cluster.txn(
            [],
            [get_op(self._job_key(job_id)), get_op(self._running(job_id)), get_op(f"{self.p}sessions/", prefix=True)],
        )
        found = _kvs(result, 0)
        if not found:
            return None
        return self._record(found[0], self._owners(_kvs(result, 1)), owners_of(_kvs(result, 2)))

    def jobs(self, limit: int = 50) -> list[JobRecord]:
        newest = get_op(f"{self.p}job/", prefix=True)
        newest["request_range"].update({"limit": limit, "sort_order": "DESCEND", "sort_target": "KEY"})
        result = self.cluster.txn(
            [], [newest, get_op(f"{self.p}running/", prefix=True), get_op(f"{self.p}sessions/", prefix=True)]
        )
        owners, live = self._owners(_kvs(result, 1)), owners_of(_kvs(result, 2))
        return [self._record(kv, owners, live) for kv in _kvs(result, 0)]

    def unfinished_jobs(self) -> list[JobRecord]:
        result = self.cluster.txn(
            [], [get_op(f"{self.p}running/", prefix=True), get_op(f"{self.p}sessions/", prefix=True)]
        )
        owners, live = self._owners(_kvs(result, 0)), owners_of(_kvs(result, 1))
        records = []
        ids = sorted(owners)
        for start in range(0, len(ids), TXN_OPS):
            batch = self.cluster.txn([], [get_op(self._job_key(i)) for i in ids[start : start + TXN_OPS]])
            for index in range(len(batch.responses)):
                records += [self._record(kv, owners, live) for kv in _kvs(batch, index)]
        return [r for r in records if r.state == JobState.RUNNING]

    def claim(self, job_id: int) -> bool:
        """One transaction: the owner is still the dead one we read, its session is still
        gone, and ours holds; two claimers of one job cannot both win."""
        key = self._running(job_id)
        kv = self.cluster.get(key)
        if kv is None:
            return False
        me = self.session.owner
        compare = [value_is(key, kv.value), present(self.session.key)]
        if kv.value not in ("", me):
            theirs = session_key(self.p, kv.value)
            if theirs is not None:
                compare.append(absent(theirs))
        if self.cluster.txn(compare, [put_op(key, me)]).succeeded:
            return True
        now = self.cluster.get(key)  # a claim whose answer was lost may have committed all the same
        return now is not None and now.value == me

    def release(self, job_id: int) -> None:
        key = self._running(job_id)
        self.cluster.txn([value_is(key, self.session.owner)], [put_op(key, "")])

    def fence_token(self, job_id: int | None) -> int:
        margin = safety_margin(self.session.ttl)
        what = f"job {job_id}" if job_id is not None else "evac"
        if not self.session.valid(margin=margin):
            raise OwnershipLost(
                f"{what}: this controller's etcd lease is about to expire; leaving the job to the next owner"
            )
        compare = [present(self.session.key)]
        failure = [get_op(self.session.key)]
        if job_id is not None:
            compare.insert(0, value_is(self._running(job_id), self.session.owner))
            failure.insert(0, get_op(self._running(job_id)))
        result = self.cluster.txn(compare, [get_op(f"{self.p}leader")], failure)
        if result.succeeded and not self.session.valid(margin=margin):  # the answer came too late
            raise OwnershipLost(f"{what}: this controller's etcd lease ran out while asking; leaving the job")
        if result.succeeded:
            leader = _kvs(result)
            return leader[0].create_revision if leader else 0
        if job_id is not None:
            now = _kvs(result)
            holder = "nobody (the job finished)" if not now else (now[0].value or "nobody (released)")
            raise OwnershipLost(f"job {job_id}: owned by {holder} now, not this controller; leaving it to them")
        raise OwnershipLost("evac: this controller's etcd lease is gone; leaving its work to the next owner")

    def _owned(
        self,
        job_id: int,
        ops: list[dict[str, Any]],
        extra: list[dict[str, Any]] | None = None,
        *,
        finished_too: bool = False,
    ) -> None:
        """Apply ``ops`` only while this controller owns the job, or nobody does. A finished
        job takes them only from the controller that finished it (``finished_too``: from
        anyone; events): a deposed owner that wakes up cannot rewrite the new owner's result."""
        key = self._running(job_id)
        compare = [value_is(key, self.session.owner), *(extra or [])]
        for _ in range(RETRIES):
            result = self.cluster.txn(compare, ops, [get_op(key)])
            if result.succeeded:
                return
            now = _kvs(result)
            if now and now[0].value not in ("", self.session.owner):
                raise OwnershipLost(
                    f"job {job_id}: owned by {now[0].value} now, not this controller; leaving it to them"
                )
            if not now and not finished_too:
                self._finished_by_us(job_id)
            compare = [absent(key) if not now else value_is(key, now[0].value), *(extra or [])]
        raise TransientError(f"job {job_id}: its owner keeps changing; try again")

    def _finished_by_us(self, job_id: int) -> None:
        kv = self.cluster.get(self._job_key(job_id))
        finisher = json.loads(kv.value).get("owner", "") if kv else ""
        if finisher != self.session.owner:
            raise OwnershipLost(f"job {job_id}: finished by {finisher or 'another controller'}; leaving it")

    def finish_job(self, job_id: int, state: JobState, error: str = "") -> None:
        key = self._job_key(job_id)
        for _ in range(RETRIES):
            found = self.cluster.txn(
                [], [get_op(key), get_op(self._running(job_id)), get_op(f"{self.p}learned/", prefix=True)]
            )
            if not _kvs(found, 0):
                return
            kv = _kvs(found, 0)[0]
            record = json.loads(kv.value)
            running = _kvs(found, 1)
            if running:
                record["owner"] = self.session.owner  # who finished it: the only one who may again
            elif record.get("owner") != self.session.owner:
                self._finished_by_us(job_id)
            record.update(state=str(state), error=error, updated=time.time())
            ops = [put_op(key, json.dumps(record, default=str))]
            if running:
                ops.append(delete_op(self._running(job_id)))
                if record.get("lock"):
                    ops.append(delete_op(self._lock(record["lock"])))
            for fact in _kvs(found, 2):
                if json.loads(fact.value).get("job_id") == job_id:
                    ops.append(delete_op(fact.key))
            if not running:  # finished already, by this controller: it may say so again
                if self.cluster.txn([mod_revision_is(key, kv.mod_revision)], ops).succeeded:
                    return
                continue
            try:
                self._owned(job_id, ops, [mod_revision_is(key, kv.mod_revision)])
                return
            except OwnershipLost:
                latest = self.cluster.get(self._running(job_id))
                if latest is not None and latest.value not in ("", self.session.owner):
                    raise
        raise TransientError(f"job {job_id}: its record keeps changing; try again")

    def request_cancel(self, job_id: int) -> None:
        key = self._job_key(job_id)
        for _ in range(RETRIES):
            kv = self.cluster.get(key)
            if kv is None:
                return
            record = json.loads(kv.value)
            record.update(cancel_requested=True, updated=time.time())
            if self.cluster.txn([mod_revision_is(key, kv.mod_revision)], [put_op(key, json.dumps(record))]).succeeded:
                return

    # ---------------------------------------------------------------- steps and items
    def step(self, job_id: int, step: str) -> StepRecord | None:
        kv = self.cluster.get(f"{self.p}step/{_id(job_id)}/{_q(step)}")
        if kv is None:
            return None
        r = json.loads(kv.value)
        return StepRecord(step, StepState(r["state"]), r["outputs"], r["error"])

    def save_step(self, job_id: int, step: str, state: StepState, outputs: dict[str, Any], error: str = "") -> None:
        value = {"state": str(state), "outputs": outputs, "error": error, "updated": time.time()}
        self._owned(job_id, [put_op(f"{self.p}step/{_id(job_id)}/{_q(step)}", json.dumps(value, default=str))])

    def items(self, job_id: int, step: str) -> dict[str, ItemRecord]:
        items = {}
        for kv in self.cluster.range(f"{self.p}item/{_id(job_id)}/{_q(step)}/"):
            r = json.loads(kv.value)
            key = unquote(kv.key.rsplit("/", 1)[1])
            items[key] = ItemRecord(key, ItemState(r["state"]), r["outputs"], r["error"], r["attempts"])
        return items

    def save_item(
        self,
        job_id: int,
        step: str,
        key: str,
        state: ItemState,
        outputs: dict[str, Any],
        error: str = "",
        attempts: int = 0,
    ) -> None:
        value = {"state": str(state), "outputs": outputs, "error": error, "attempts": attempts, "updated": time.time()}
        name = f"{self.p}item/{_id(job_id)}/{_q(step)}/{_q(key)}"
        self._owned(job_id, [put_op(name, json.dumps(value, default=str))])

    # ---------------------------------------------------------------- events, approvals, audit
    def add_event(self, event: Event) -> None:
        value = {
            "ts": event.ts,
            "kind": str(event.kind),
            "step": event.step,
            "item": event.item,
            "message": event.message,
            "data": event.data,
        }
        op = put_op(f"{self.p}event/{_id(event.job_id)}/{uuid.uuid4().hex}", json.dumps(value, default=str))
        if event.job_id == 0:  # the monitor's, no job's
            self.cluster.txn([], [op])
        else:
            self._owned(event.job_id, [op], finished_too=True)

    def events(self, job_id: int, after: int = 0) -> list[tuple[int, Event]]:
        kvs = self.cluster.range(f"{self.p}event/{_id(job_id)}/", sort_target="create", min_create_revision=after + 1)
        return [(kv.create_revision, _event(job_id, json.loads(kv.value))) for kv in kvs]

    def approve(self, job_id: int, step: str, actor: str) -> None:
        key = f"{self.p}approval/{_id(job_id)}/{_q(step)}"
        self.cluster.txn([absent(key)], [put_op(key, json.dumps({"actor": actor, "ts": time.time()}))])

    def approved_by(self, job_id: int, step: str) -> str | None:
        kv = self.cluster.get(f"{self.p}approval/{_id(job_id)}/{_q(step)}")
        return str(json.loads(kv.value)["actor"]) if kv else None

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        value = {"ts": time.time(), "actor": actor, "action": action, "target": target, "detail": detail or {}}
        self.cluster.put(f"{self.p}audit/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", json.dumps(value, default=str))

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        kvs = self.cluster.range(f"{self.p}audit/", limit=limit, descending=True, sort_target="create")
        return [_audit(json.loads(kv.value)) for kv in kvs]

    # ---------------------------------------------------------------- host states
    def set_host_state(self, host: str, state: HostMode, reason: str, actor: str) -> None:
        key = f"{self.p}host/{_q(host)}"
        if state == HostMode.ENABLED:
            self.cluster.delete(key)
            return
        value = {"state": str(state), "reason": reason, "actor": actor, "since": time.time()}
        self.cluster.put(key, json.dumps(value))

    def host_states(self) -> dict[str, HostState]:
        states = {}
        for kv in self.cluster.range(f"{self.p}host/"):
            r, host = json.loads(kv.value), unquote(kv.key.rsplit("/", 1)[1])
            states[host] = HostState(host, HostMode(r["state"]), r["reason"], r["actor"], r["since"])
        return states

    # ---------------------------------------------------------------- storm brake
    def engage_brake(self, reason: str) -> None:
        key = f"{self.p}brake"
        self.cluster.txn([absent(key)], [put_op(key, json.dumps({"reason": reason, "since": time.time()}))])

    def release_brake(self) -> bool:
        return self.cluster.delete(f"{self.p}brake") > 0

    def brake(self) -> BrakeState | None:
        kv = self.cluster.get(f"{self.p}brake")
        if kv is None:
            return None
        r = json.loads(kv.value)
        return BrakeState(r["reason"], r["since"])

    # ---------------------------------------------------------------- HA disarmed
    def disarm(self, reason: str, actor: str) -> bool:
        key = f"{self.p}disarmed"
        record = json.dumps({"reason": reason, "actor": actor, "since": time.time()})
        return self.cluster.txn([absent(key)], [put_op(key, record)]).succeeded

    def arm(self) -> Disarmed | None:
        held = self.disarmed()
        return held if held is not None and self.cluster.delete(f"{self.p}disarmed") > 0 else None

    def disarmed(self) -> Disarmed | None:
        kv = self.cluster.get(f"{self.p}disarmed")
        if kv is None:
            return None
        r = json.loads(kv.value)
        return Disarmed(r["reason"], r["actor"], r["since"])

    # ---------------------------------------------------------------- slots
    def take_slot(self, slot: str, limit: int, holder: str) -> bool:
        """Holders whose session is gone are dropped: their places are free again."""
        key = f"{self.p}slot/{_q(slot)}"
        for _ in range(RETRIES):
            result = self.cluster.txn([], [get_op(key), get_op(f"{self.p}sessions/", prefix=True)])
            found, live = _kvs(result, 0), owners_of(_kvs(result, 1))
            holders: dict[str, str] = json.loads(found[0].value) if found else {}
            held = {h: o for h, o in holders.items() if o in live or o == self.session.owner}
            taken = holder in held or len(held) < max(1, limit)
            if taken:
                held.setdefault(holder, self.session.owner)
            if held == holders:
                return taken
            compare = [mod_revision_is(key, found[0].mod_revision) if found else absent(key)]
            if self.cluster.txn(compare, [put_op(key, json.dumps(held))]).succeeded:
                return taken
        raise TransientError(f"slot {slot}: {RETRIES} conflicting updates in a row; try again")

    def release_slot(self, slot: str, holder: str) -> None:
        key = f"{self.p}slot/{_q(slot)}"
        for _ in range(RETRIES):
            kv = self.cluster.get(key)
            if kv is None:
                return
            holders = json.loads(kv.value)
            if holders.pop(holder, None) is None:
                return
            op = put_op(key, json.dumps(holders)) if holders else delete_op(key)
            if self.cluster.txn([mod_revision_is(key, kv.mod_revision)], [op]).succeeded:
                return

    # ---------------------------------------------------------------- guest definitions
    def save_definitions(self, host: str, definitions: dict[str, str]) -> None:
        value = {"ts": time.time(), "definitions": definitions}
        self.cluster.put(f"{self.p}definitions/{_q(host)}", json.dumps(value))

    def definitions(self, host: str) -> dict[str, str]:
        kv = self.cluster.get(f"{self.p}definitions/{_q(host)}")
        return dict(json.loads(kv.value)["definitions"]) if kv else {}

    def snapshot_taken(self, host: str) -> float | None:
        kv = self.cluster.get(f"{self.p}definitions/{_q(host)}")
        return float(json.loads(kv.value)["ts"]) if kv else None

    # ---------------------------------------------------------------- learned facts and seen keys
    def remember(self, key: str, value: str, job: int | None = None) -> None:
        fact = {"value": value, "ts": time.time(), "job_id": job}
        self.cluster.put(f"{self.p}learned/{_q(key)}", json.dumps(fact))

    def recall(self, key: str) -> str | None:
        kv = self.cluster.get(f"{self.p}learned/{_q(key)}")
        return str(json.loads(kv.value)["value"]) if kv else None

    def forget(self, key: str) -> None:
        self.cluster.delete(f"{self.p}learned/{_q(key)}")

    def first_seen(self, key: str, ttl: float) -> bool:
        """The key lives on a lease of its own: etcd forgets it after ``ttl`` seconds."""
        name = f"{self.p}seen/{_q(key)}"
        lease = self.cluster.grant(max(1, math.ceil(ttl)))
        fresh = self.cluster.txn([absent(name)], [put_op(name, str(time.time()), lease)]).succeeded
        if not fresh:
            self.cluster.revoke(lease)
        return fresh

    def forget_seen(self, key: str) -> None:
        self.cluster.delete(f"{self.p}seen/{_q(key)}")

    # ---------------------------------------------------------------- retention
    def prune(self, events_before: float, audit_before: float) -> tuple[int, int]:
        """As SQLite's, then compact etcd's history once (see the module's docstring)."""
        jobs = {int(kv.key.rsplit("/", 1)[1]): json.loads(kv.value) for kv in self.cluster.range(f"{self.p}job/")}
        with_events = {int(kv.key.split("/")[-2]) for kv in self.cluster.range(f"{self.p}event/", keys_only=True)}
        ops: list[dict[str, Any]] = []
        for job_id in sorted(with_events):
            record = jobs.get(job_id)
            if record is None:
                for kv in self.cluster.range(f"{self.p}event/{_id(job_id)}/"):
                    if json.loads(kv.value)["ts"] < events_before:
                        ops.append(delete_op(kv.key))
            elif record["state"] in TERMINAL and record["updated"] < events_before:
                ops.append(delete_op(f"{self.p}event/{_id(job_id)}/", prefix=True))
        events = self._delete(ops)
        old = [kv for kv in self.cluster.range(f"{self.p}audit/") if json.loads(kv.value)["ts"] < audit_before]
        audit = self._delete([delete_op(kv.key) for kv in old])
        if events or audit:
            revision = self.cluster.revision() - KEEP_REVISIONS
            if revision > 0:
                self.cluster.compact(revision)
        return events, audit

    def _delete(self, ops: list[dict[str, Any]]) -> int:
        deleted = 0
        for start in range(0, len(ops), TXN_OPS):
            result = self.cluster.txn([], ops[start : start + TXN_OPS])
            deleted += sum(int(r.get("deleted", 0)) for r in result.responses)
        return deleted

    # ---------------------------------------------------------------- copy (evac journal copy)
    def dump(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record, as ``evac.journalcopy`` moves them between journals."""
        owners = self._owners(self.cluster.range(f"{self.p}running/"))
        for kv in self.cluster.range(f"{self.p}job/"):
            job_id = int(kv.key.rsplit("/", 1)[1])
            record = json.loads(kv.value)
            record.update(id=job_id, owner=owners.get(job_id, record.get("owner", "")))
            yield "job", record
        for kv in self.cluster.range(f"{self.p}step/"):
            _, job, step = kv.key.rsplit("/", 2)
            yield "step", {"job_id": int(job), "step": unquote(step), **json.loads(kv.value)}
        for kv in self.cluster.range(f"{self.p}item/"):
            _, job, step, key = kv.key.rsplit("/", 3)
            yield "item", {"job_id": int(job), "step": unquote(step), "key": unquote(key), **json.loads(kv.value)}
        for kv in self.cluster.range(f"{self.p}event/", sort_target="create"):
            yield "event", {"id": kv.create_revision, "job_id": int(kv.key.split("/")[-2]), **json.loads(kv.value)}
        for kv in self.cluster.range(f"{self.p}approval/"):
            _, job, step = kv.key.rsplit("/", 2)
            yield "approval", {"job_id": int(job), "step": unquote(step), **json.loads(kv.value)}
        for kv in self.cluster.range(f"{self.p}audit/", sort_target="create"):
            yield "audit", {"id": kv.create_revision, **json.loads(kv.value)}
        for kv in self.cluster.range(f"{self.p}host/"):
            yield "host", {"host": unquote(kv.key.rsplit("/", 1)[1]), **json.loads(kv.value)}
        brake = self.cluster.get(f"{self.p}brake")
        if brake is not None:
            yield "brake", json.loads(brake.value)
        disarmed = self.cluster.get(f"{self.p}disarmed")
        if disarmed is not None:
            yield "disarmed", json.loads(disarmed.value)
        for kv in self.cluster.range(f"{self.p}definitions/"):
            yield "definitions", {"host": unquote(kv.key.rsplit("/", 1)[1]), **json.loads(kv.value)}
        for kv in self.cluster.range(f"{self.p}learned/"):
            yield "learned", {"key": unquote(kv.key.rsplit("/", 1)[1]), **json.loads(kv.value)}

    def load(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Into an empty journal: job ids kept, events and audit rows in their order.
        A copied unfinished job belongs to nobody until a controller claims it."""
        if self.cluster.range(f"{self.p}job/", limit=1, keys_only=True):
            raise ConfigError(f"etcd journal {self.p}: already has jobs; copy only into an empty journal")
        batch: list[dict[str, Any]] = []
        last_job = 0

        def flush() -> None:
            if batch:
                self.cluster.txn([], batch[:])
                batch.clear()

        def add(*ops: dict[str, Any]) -> None:
            if len(batch) + len(ops) > TXN_OPS:
                flush()
            batch.extend(ops)

        for kind, r in records:
            r = dict(r)
            if kind == "job":
                job_id = int(r.pop("id"))
                last_job = max(last_job, job_id)
                ops = [put_op(self._job_key(job_id), json.dumps(r, default=str))]
                if r["state"] == JobState.RUNNING:
                    ops.append(put_op(self._running(job_id), ""))
                    if r.get("lock"):
                        ops.append(put_op(self._lock(r["lock"]), str(job_id)))
                add(*ops)
            elif kind == "step":
                job, step = int(r.pop("job_id")), r.pop("step")
                add(put_op(f"{self.p}step/{_id(job)}/{_q(step)}", json.dumps(r)))
            elif kind == "item":
                job, step, key = int(r.pop("job_id")), r.pop("step"), r.pop("key")
                add(put_op(f"{self.p}item/{_id(job)}/{_q(step)}/{_q(key)}", json.dumps(r)))
            elif kind in ("event", "audit"):
                flush()  # one revision each: the id is the key's create_revision, so the order holds
                r.pop("id", None)
                if kind == "event":
                    key = f"{self.p}event/{_id(int(r.pop('job_id')))}/{uuid.uuid4().hex}"
                else:
                    key = f"{self.p}audit/{int(r['ts'] * 1e9):020d}-{uuid.uuid4().hex[:8]}"
                self.cluster.put(key, json.dumps(r))
            elif kind == "approval":
                job, step = int(r.pop("job_id")), r.pop("step")
                add(put_op(f"{self.p}approval/{_id(job)}/{_q(step)}", json.dumps(r)))
            elif kind == "host":
                add(put_op(f"{self.p}host/{_q(r.pop('host'))}", json.dumps(r)))
            elif kind == "brake":
                add(put_op(f"{self.p}brake", json.dumps(r)))
            elif kind == "disarmed":
                add(put_op(f"{self.p}disarmed", json.dumps(r)))
            elif kind == "definitions":
                add(put_op(f"{self.p}definitions/{_q(r.pop('host'))}", json.dumps(r)))
            elif kind == "learned":
                add(put_op(f"{self.p}learned/{_q(r.pop('key'))}", json.dumps(r)))
            else:
                raise ConfigError(f"etcd journal {self.p}: unknown record kind {kind!r} in the copy")
        flush()
        if last_job:
            counter = f"{self.p}seq/job"
            kv = self.cluster.get(counter)
            if kv is None or int(kv.value) < last_job:
                self.cluster.put(counter, str(last_job))


def _event(job_id: int, r: dict[str, Any]) -> Event:
    return Event(r["kind"], job_id, r["step"], r["item"], r["message"], r["data"], r["ts"])


def _audit(r: dict[str, Any]) -> AuditRecord:
    return AuditRecord(r["ts"], r["actor"], r["action"], r["target"], r["detail"])
