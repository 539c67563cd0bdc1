"""Durable job state: what the engine did, so a killed controller can finish the job.

The engine talks only to the :class:`Journal` protocol; ``evac.sqlitejournal`` is the
embedded default, and a distributed backend (etcd) implements the same methods.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .events import Event
from .states import TERMINAL, HostMode, ItemState, JobState, StepState


@dataclass(frozen=True)
class JobRecord:
    id: int
    runbook: str
    source: str
    params: dict[str, Any]
    target: str
    state: JobState
    dry_run: bool
    lock: str | None
    owner: str
    created: float
    updated: float
    error: str = ""
    cancel_requested: bool = False
    owner_live: bool | None = None  # set by a journal that knows (etcd: the owner's lease holds)

    @property
    def orphaned(self) -> bool:
        """Running, but the process that ran it is gone: nothing moves until ``evac resume``,
        the next start of ``evac serve`` or (on etcd) the leader takes it over."""
        live = owner_alive(self.owner) if self.owner_live is None else self.owner_live
        return self.state == JobState.RUNNING and not live

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class StepRecord:
    step: str
    state: StepState
    outputs: dict[str, Any]
    error: str = ""


@dataclass(frozen=True)
class ItemRecord:
    key: str
    state: ItemState
    outputs: dict[str, Any]
    error: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class HostState:
    """Evac's own view of a host, kept across runs: ``maintenance`` hosts take no guests."""

    host: str
    state: HostMode
    reason: str
    actor: str
    since: float


@dataclass(frozen=True)
class BrakeState:
    """An engaged storm brake. Kept in the journal so it holds across restarts of the
    service until an operator releases it, from any process (CLI, Slack, the service)."""

    reason: str
    since: float


@dataclass(frozen=True)
class Disarmed:
    """HA disarmed across the cluster (Proxmox's ``disarm-ha``): monitors observe and alert
    but neither fence nor restart, and agents stop self-fencing. Kept in the journal so it
    holds across restarts until someone arms again."""

    reason: str
    actor: str
    since: float

    MEANS = (  # what disarmed does, for every channel that says it (each adds its own way out)
        "hosts that go down are reported, never fenced or failed over; guests whose QEMU dies are not "
        "restarted; agents feed their watchdogs whatever happens"
    )

    def describe(self) -> str:
        """``by WHO since DATE: REASON`` (local time): the one plain-text wording of who
        disarmed HA, for the log, the CLI and the events. Slack renders its own (mentions,
        dates in each reader's time zone) from the same fields."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"by {self.actor} since {since}: {self.reason or 'no reason given'}"


@dataclass(frozen=True)
class AuditRecord:
    ts: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class Journal(Protocol):
    def create_job(
        self, runbook: str, source: str, params: dict[str, Any], target: str, dry_run: bool, lock: str | None
    ) -> int:
        """A new running job owned by this process; ``LockedError`` while ``lock`` is held."""
        ...

    def job(self, job_id: int) -> JobRecord | None: ...
    def jobs(self, limit: int = 50) -> list[JobRecord]: ...
    def unfinished_jobs(self) -> list[JobRecord]: ...
    def claim(self, job_id: int) -> bool:
        """Take over a job whose owner is dead; False if a live process owns it."""
        ...

    def release(self, job_id: int) -> None:
        """Give up a running job this process owns, so another controller claims it at once
        (a failover started on a replica that does not lead is handed to the leader)."""
        ...

    def fence_token(self, job_id: int | None) -> int:
        """Check, in one transaction, that this process may still apply an effect for job
        ``job_id`` (a fence, a restart, a migration start): it still owns the job, and its
        lease has time left by its own clock. Returns the fencing token (:mod:`evac.tokens`),
        the cluster's leader revision; ``OwnershipLost`` when the right is gone. One process
        owns an embedded journal, which returns 0."""
        ...

    def finish_job(self, job_id: int, state: JobState, error: str = "") -> None:
        """Record the final state, release the job's lock and forget its facts."""
        ...

    def request_cancel(self, job_id: int) -> None: ...
    def step(self, job_id: int, step: str) -> StepRecord | None: ...
    def save_step(self, job_id: int, step: str, state: StepState, outputs: dict[str, Any], error: str = "") -> None: ...
    def items(self, job_id: int, step: str) -> dict[str, ItemRecord]: ...
    def save_item(
        self,
        job_id: int,
        step: str,
        key: str,
        state: ItemState,
        outputs: dict[str, Any],
        error: str = "",
        attempts: int = 0,
    ) -> None: ...
    def add_event(self, event: Event) -> None: ...
    def events(self, job_id: int, after: int = 0) -> list[tuple[int, Event]]: ...
    def approve(self, job_id: int, step: str, actor: str) -> None: ...
    def approved_by(self, job_id: int, step: str) -> str | None: ...
    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None: ...
    def audit_log(self, limit: int = 100) -> list[AuditRecord]: ...
    def set_host_state(self, host: str, state: HostMode, reason: str, actor: str) -> None: ...
    def host_states(self) -> dict[str, HostState]: ...
    def engage_brake(self, reason: str) -> None: ...
    def release_brake(self) -> bool:
        """Release an engaged brake; False when none was engaged."""
        ...

    def brake(self) -> BrakeState | None: ...
    def disarm(self, reason: str, actor: str) -> bool:
        """Disarm HA; False when it was disarmed already (the first reason stands)."""
        ...

    def arm(self) -> Disarmed | None:
        """Arm HA again; what was disarmed, or None when it was armed."""
        ...

    def disarmed(self) -> Disarmed | None: ...
    def take_slot(self, slot: str, limit: int, holder: str) -> bool:
        """One of ``limit`` places in ``slot`` (``in:host2``) for ``holder``, shared by every
        evac process on this journal; False while live processes hold them all."""
        ...

    def release_slot(self, slot: str, holder: str) -> None: ...
    def save_definitions(self, host: str, definitions: dict[str, str]) -> None:
        """The host's guest definitions (domain XML by name), replacing the previous snapshot."""
        ...

    def definitions(self, host: str) -> dict[str, str]:
        """The last snapshot of the host's guest definitions: a dead host cannot be asked."""
        ...

    def snapshot_taken(self, host: str) -> float | None:
        """When the host's last snapshot was saved (epoch seconds); None: never. A snapshot
        of no guests is a real empty host, which only this tells from an unknown one."""
        ...

    def remember(self, key: str, value: str, job: int | None = None) -> None:
        """A small fact learned from experience (what a guest's last migration needed).
        With ``job``, the fact belongs to that job and is forgotten when it finishes."""
        ...

    def recall(self, key: str) -> str | None: ...
    def first_seen(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds, False for a repeat:
        a webhook's nonce, an alert's fingerprint. Shared by every evac process on this
        journal, so a replay sent to another replica is a repeat too."""
        ...

    def forget_seen(self, key: str) -> None:
        """Take back a :meth:`first_seen`: what it guarded did not happen after all."""
        ...

    def forget(self, key: str) -> None:
        """Drop a fact that no longer holds (a guest's failed targets once it landed)."""
        ...

    def prune(self, events_before: float, audit_before: float) -> tuple[int, int]:
        """Retention (``evac.retention``): remove the events of jobs that finished before
        ``events_before`` and the audit rows older than ``audit_before`` (epoch seconds).
        Events of unfinished jobs are never removed; job rows are kept. Returns the number
        of (events, audit rows) removed."""
        ...

    def dump(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record as (kind, JSON-able dict), for ``evac journal copy``: kinds are job,
        step, item, event, approval, audit, host, brake, definitions and learned. Locks
        follow from running jobs; slots and seen keys are short-lived and not copied."""
        ...

    def load(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Records from :meth:`dump` into an empty journal (``ConfigError`` if it has jobs),
        keeping job ids, timestamps and the order of events and audit rows. An unfinished
        job arrives owned by nobody, for the next controller to claim."""
        ...


def current_owner() -> str:
    """This process, in a form another process can check for liveness."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def owner_alive(owner: str) -> bool:
    """Whether the process that owns a job still runs (on this machine)."""
    try:
        host, pid, started = owner.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's process: only its own lease can tell
    return _start_time(int(pid)) == started


def _start_time(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "gone"
    return fields[19] if fields[0] != "Z" else "gone"
