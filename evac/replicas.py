"""Several ``evac serve`` replicas on one etcd: shared evidence, one leader, quorum safety.

Each replica publishes its view of every host under ``{prefix}view/<host>/<lease>``,
attached to its session lease, so the view of a replica that died or lost etcd vanishes
with its lease. The leader fails a host over only when enough of the views still there
say the host is down: a majority of the replicas that can reach etcd, or the number
set by ``etcd.agree``. A replica that cannot reach etcd has no say, and no replica acts
without etcd: with quorum lost nothing is fenced or restarted, an alert says so, and
failovers wait for quorum to return.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from .coordination import Agreement
from .errors import JournalError
from .etcdclient import Cluster, put_op
from .etcdsession import Session
from .events import Event
from .leadership import Leadership
from .states import EventKind, Health

log = logging.getLogger("evac.replicas")
BATCH = 100  # views per transaction (etcd allows 128 operations in one)


class Replicas:
    """This replica among the others: its leadership, its published views, its count of
    the others' views, and its alerts when etcd goes away and comes back."""

    def __init__(self, cluster: Cluster, session: Session, agree: int | None = None, name: str = "") -> None:
        self.cluster = cluster
        self.session = session
        self.agree = agree
        # Stable across new leases: its views are replaced, never counted twice.
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.peak = 1  # the most replicas seen at once: a lone survivor of several may not fence alone
        self.prefix = cluster.settings.prefix
        self.leadership = Leadership(cluster, session, self._leadership_changed)
        self._views: dict[str, tuple[Health, str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self._emit: Callable[[Event], None] = lambda event: None
        self.available = True
        self._publisher = threading.Thread(target=self._publish_loop, daemon=True, name="replica-views")

    # ---------------------------------------------------------------- lifecycle
    def start(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self.leadership.start()
        self._publisher.start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        self.leadership.stop()
        self._publisher.join(5)

    # ---------------------------------------------------------------- coordination
    def leads(self) -> bool:
        return self.available and self.leadership.leads()

    def publish(self, host: str, health: Health, reason: str) -> None:
        """Never blocks (the monitor calls it under its lock): the publisher thread writes."""
        with self._lock:
            self._views[host] = (health, reason, time.time())
        self._dirty.set()

    def agreed_down(self, host: str) -> Agreement:
        if not self.leadership.leads():
            return Agreement(False, f"this replica does not lead (leader: {self.leadership.leader or 'none'})")
        try:
            views = [json.loads(kv.value) for kv in self.cluster.range(f"{self.prefix}view/{quote(host, safe='')}/")]
        except JournalError as exc:
            return Agreement(False, f"etcd unavailable: {exc}")
        self.peak = max(self.peak, len(views))
        down = sum(1 for view in views if view.get("health") == Health.DOWN)
        need = self.agree if self.agree is not None else max(len(views) // 2 + 1, min(2, self.peak))
        seen = f"{down} of {len(views)} replicas see {host} down"
        if views and down >= need:
            return Agreement(True, seen)
        return Agreement(False, f"{seen}; {need} must")

    def status(self) -> dict[str, Any]:
        return {
            "mode": "replicated",
            "replica": self.name,
            "leader": self.leadership.leads(),
            "leader_is": self.leadership.leader,
            "revision": self.leadership.revision,
            "etcd": "ok" if self.available else "unavailable",
        }

    # ---------------------------------------------------------------- publishing
    def _publish_loop(self) -> None:
        """Publish every view again each third of the lease: a replica whose lease was lost
        and granted anew has lost its views with it, and a failed write is retried."""
        every = max(0.2, self.cluster.settings.lease_ttl / 3)
        while not self._stop.is_set():
            with self._lock:
                views = dict(self._views)
            self._put(views)
            self._dirty.wait(every)
            self._dirty.clear()

    def _put(self, views: dict[str, tuple[Health, str, float]]) -> None:
        items = list(views.items())
        lease, _ = self.session.identity()
        try:
            for start in range(0, max(1, len(items)), BATCH):
                ops = [
                    put_op(
                        f"{self.prefix}view/{quote(host, safe='')}/{quote(self.name, safe='')}",
                        json.dumps({"health": health, "reason": reason, "at": at, "replica": self.name}),
                        lease,
                    )
                    for host, (health, reason, at) in items[start : start + BATCH]
                ]
                if ops:
                    self.cluster.txn([], ops)
                else:
                    self.cluster.revision()  # nothing to publish: still learn whether etcd answers
        except JournalError as exc:
            self._availability(False, str(exc))
            return
        except Exception:  # the publisher must live on; the next round tries again
            log.exception("publishing this replica's views")
            return
        self._availability(True, "")

    def _availability(self, ok: bool, error: str) -> None:
        if ok == self.available:
            return
        self.available = ok
        if ok:
            log.info("etcd answers again: waiting failovers go ahead")
            self._emit(Event(EventKind.CLUSTER_AVAILABLE, 0, message="etcd answers again"))
            return
        message = f"ALERT: etcd unavailable, nothing is fenced or restarted until it returns: {error}"
        log.error("%s", message)
        self._emit(Event(EventKind.CLUSTER_UNAVAILABLE, 0, message=message, data={"level": "alert", "error": error}))

    def _leadership_changed(self, leads: bool, revision: int) -> None:
        kind = EventKind.CLUSTER_LEADER if leads else EventKind.CLUSTER_FOLLOWER
        message = f"{self.name} leads (revision {revision})" if leads else f"{self.name} no longer leads"
        self._emit(Event(kind, 0, item=self.name, message=message, data={"replica": self.name, "revision": revision}))
