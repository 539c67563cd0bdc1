"""One leader among evac's replicas, elected on etcd with a lease and a transaction.

The recipe etcd itself documents, without its election API (which etcd3gw does not
speak): create ``{prefix}leader`` with our session's lease if it is absent; whoever's
key it is leads, and the others watch it. When the leader dies its lease expires, the
key goes with it, and the watchers race to create it again; the transaction lets exactly
one win.

The key's ``create_revision`` is the leader's *revision*: the fencing token of every
effect it applies (:mod:`evac.tokens`). A new leader always has a higher one.

A leader that cannot renew its lease (paused, or cut off from etcd) stops leading by its
own clock, a margin before the lease can expire on the servers, so it has stopped before
anyone else can start: :meth:`Leadership.leads` checks the local deadline on every call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .errors import JournalError
from .etcdclient import Cluster, absent, delete_op, get_op, put_op, value_is
from .etcdsession import Session, safety_margin

log = logging.getLogger("evac.leadership")


def leader_key(prefix: str) -> str:
    return f"{prefix}leader"


class Leadership:
    """Campaign for the leader key and follow who holds it. ``on_change(leads, revision)``
    is called on every change of this replica's role."""

    def __init__(
        self, cluster: Cluster, session: Session, on_change: Callable[[bool, int], None] | None = None
    ) -> None:
        self.cluster = cluster
        self.session = session
        self.key = leader_key(cluster.settings.prefix)
        self.margin = safety_margin(cluster.settings.lease_ttl)
        self.on_change = on_change or (lambda leads, revision: None)
        self.revision = 0  # our leader key's create_revision while we lead, else 0
        self.leader = ""  # who leads, as last seen
        self._as = ""  # the owner string we lead as: a new lease is a new owner, who does not lead
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="leadership")
        self._leading = False

    def start(self) -> None:
        self.session.on_lost.append(lambda: self._set(False, 0))
        self.cluster.watch(self.key, self._wake.set, self._stop)
        self._thread.start()

    def stop(self) -> None:
        """Resign: delete the key if it is still ours, so a follower takes over at once."""
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        if self._leading:
            try:
                self.cluster.txn([value_is(self.key, self._as)], [delete_op(self.key)])
            except JournalError as exc:
                log.warning("could not resign the leadership (it ends with the lease): %s", exc)
            self._set(False, 0)

    def leads(self) -> bool:
        """Leading now: by the key we created, as the owner we still are, and by our own
        clock's view of our lease."""
        return self._leading and self._as == self.session.owner and self.session.valid(self.margin)

    def _run(self) -> None:
        interval = max(0.2, self.cluster.settings.lease_ttl / 3)
        while not self._stop.is_set():
            try:
                self._campaign()
            except Exception:  # the campaign must go on whatever broke once
                log.exception("leader campaign failed")
            self._wake.wait(interval if self._leading else min(interval, 1.0))
            self._wake.clear()

    def _campaign(self) -> None:
        if not self.session.valid(self.margin):
            self._set(False, 0)
            return
        lease, owner = self.session.identity()
        try:
            result = self.cluster.txn([absent(self.key)], [put_op(self.key, owner, lease)], [get_op(self.key)])
        except JournalError as exc:
            log.debug("leader campaign: %s", exc)
            if not self.session.valid(self.margin):
                self._set(False, 0)
            return
        if result.succeeded:
            self.leader = owner
            self._set(True, result.revision, owner)
            return
        kvs = result.responses[0].get("kvs", []) if result.responses else []
        if not kvs:  # deleted between the compare and the read: campaign again soon
            self._wake.set()
            return
        holder = kvs[0]
        self.leader = holder.value
        ours = holder.value == owner
        self._set(ours, holder.create_revision if ours else 0, owner if ours else "")

    def _set(self, leads: bool, revision: int, owner: str = "") -> None:
        if leads == self._leading and (not leads or revision == self.revision):
            return
        was = self._leading
        self._leading, self.revision, self._as = leads, revision, owner
        if leads:
            log.info("this replica leads (revision %s)", revision)
        elif was:
            log.warning("this replica lost the leadership: its lease expired or could not be renewed")
        self.on_change(leads, revision)
