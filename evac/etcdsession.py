"""A controller's session: one etcd lease, kept alive while the process is healthy.

Everything a controller owns on etcd (its running jobs, its slots) names the session's
owner string, and is another controller's to take over once the lease is gone. The
session judges its own validity by this process's monotonic clock, from the moment it
last *sent* a successful keepalive, so it gives up before etcd can expire the lease
(a paused process must not act on a right it has lost).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from .errors import JournalError
from .etcdclient import KV, Cluster

log = logging.getLogger(__name__)

RETRY = 0.25  # s before the first try again after a failed keepalive or grant


def next_try(failures: int, ttl: float) -> float:
    """Seconds before the next keepalive (or grant of a new lease): every third of the
    lease, and after ``failures`` failed tries in a row 0.25 s, then twice as long each
    time, up to that third. A member without a leader refuses at once (see
    :meth:`Cluster.for_lease`) and an election is over in about a second: an agent whose
    lease lapsed while the leader died must hold a new one before its watchdog fires
    (found by the nemesis, seed 2122160409: granting again only a second after a refusal
    came too late, its host reset, and with the dead leader's that was two members of
    three). A cluster without quorum still sees one try per third of a lease, not four a
    second, from each agent once a few have failed."""
    if failures == 0:
        return ttl / 3
    return min(ttl / 3, RETRY * 2.0 ** (failures - 1))


def safety_margin(ttl: float) -> float:
    """How long before its lease could expire a controller stops acting on it: renewals
    are late when the machine is busy, and clocks run at slightly different rates."""
    return max(0.5, ttl * 0.2)


def owners_of(sessions: list[KV]) -> set[str]:
    """The owner strings of the session keys ``sessions`` (``{prefix}sessions/…``)."""
    owners = set()
    for kv in sessions:
        try:
            owners.add(str(json.loads(kv.value)["owner"]))
        except (ValueError, KeyError, TypeError):
            continue
    return owners


def session_key(prefix: str, owner: str) -> str | None:
    """The session key behind an owner string (``etcd:<lease hex>@host:pid``); None for
    an owner that is no etcd session (an embedded journal's, or nobody's)."""
    if not owner.startswith("etcd:") or "@" not in owner:
        return None
    return f"{prefix}sessions/{owner[5:].split('@', 1)[0]}"


class Session:
    """This process's lease on etcd: what it owns is its own while the lease holds. Lost
    (expired, or past its deadline by this process's clock), it is replaced by a new
    lease with a new owner string, and what the old one owned is another's to claim."""

    def __init__(self, cluster: Cluster, ttl: int, name: str = "") -> None:
        self.cluster = cluster.for_lease(ttl)  # its own connections: see Cluster.for_lease
        self.ttl = ttl
        self.name = name or socket.gethostname()
        self.id = 0  # the current lease; a new one after the old was lost
        self.owner = ""
        self.on_lost: list[Callable[[], None]] = []
        self._renewed = 0.0  # monotonic send time of the last keepalive that etcd answered
        self._lost = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._identity = threading.Lock()

    @property
    def key(self) -> str:
        return f"{self.cluster.settings.prefix}sessions/{self.id:x}"

    def start(self) -> None:
        """Grant the lease and publish the session (``ClusterUnavailable`` if etcd cannot)."""
        self._grant()
        self._stop.clear()
        self._thread = threading.Thread(target=self._keepalive, name=f"etcd-session {self.owner}", daemon=True)
        self._thread.start()

    def stop(self, revoke: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        lease, self._renewed, self._lost = self.id, 0.0, True
        if revoke and lease:
            try:
                self.cluster.revoke(lease)
            except JournalError as exc:
                log.warning("etcd session %s: could not revoke its lease (it expires on its own): %s", self.owner, exc)

    def valid(self, margin: float = 0.0) -> bool:
        """The lease holds by this process's own clock, ``margin`` seconds ahead."""
        return not self._lost and self.deadline() - margin > time.monotonic()

    def give_up(self) -> None:
        """Stop trusting the lease now: the keepalive thread grants a new one (and revokes
        this one when etcd answers), so whoever holds "the same lease" held it throughout."""
        if not self._lost:
            self._lose()

    def deadline(self) -> float:
        """Monotonic time at which etcd may expire the lease at the earliest."""
        return self._renewed + self.ttl

    def identity(self) -> tuple[int, str]:
        """The lease and the owner string, read together (a new lease changes both)."""
        with self._identity:
            return self.id, self.owner

    def live_owners(self) -> set[str]:
        """The owner of every live session, in one read."""
        return owners_of(self.cluster.range(f"{self.cluster.settings.prefix}sessions/"))

    def _grant(self) -> None:
        if self.id:
            # Whatever the old lease still holds (views, the leader key) must not outlive
            # it alongside the new one's.
            self._revoke_quietly(self.id)
        sent = time.monotonic()
        lease = self.cluster.grant(self.ttl)
        owner = f"etcd:{lease:x}@{socket.gethostname()}:{os.getpid()}"
        record = {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        try:
            self.cluster.put(
                f"{self.cluster.settings.prefix}sessions/{lease:x}", json.dumps({**record, "owner": owner}), lease
            )
        except JournalError:
            self._revoke_quietly(lease)
            raise
        with self._identity:
            self.id, self.owner, self._renewed, self._lost = lease, owner, sent, False

    def _revoke_quietly(self, lease: int) -> None:
        try:
            self.cluster.revoke(lease)
        except JournalError:
            pass  # it expires on its own

    def _keepalive(self) -> None:
        """Every third of the lease; after failed tries, again sooner (:func:`next_try`)."""
        failures = 0
        while not self._stop.wait(next_try(failures, self.ttl)):
            outage = failures > 0
            try:
                if not self._lost:
                    sent = time.monotonic()
                    if self.cluster.keepalive(self.id) > 0:
                        self._renewed = sent
                    else:
                        log.warning("etcd session %s: its lease is gone", self.owner)
                        self._lose()
                if self._lost:
                    self._grant()
                    log.info("etcd session: new lease, owner %s", self.owner)
                if outage:
                    log.info("etcd session %s: etcd answers again", self.owner)
                failures = 0
            except Exception as exc:  # JournalError, or anything else: the thread must live on
                failures += 1
                if not outage:
                    if isinstance(exc, JournalError):
                        log.warning("etcd session %s: keepalive failed: %s", self.owner, exc)
                    else:
                        log.exception("etcd session %s: keepalive failed", self.owner)
                if not self._lost and time.monotonic() >= self.deadline():
                    log.warning("etcd session %s: its lease expired by this process's clock", self.owner)
                    self._lose()

    def _lose(self) -> None:
        self._lost = True
        for callback in list(self.on_lost):
            try:
                callback()
            except Exception:
                log.exception("etcd session %s: an on_lost callback failed", self.owner)
