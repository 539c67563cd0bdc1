"""A job's connections to its hosts: one libvirt connection per host, and each host's
bridges as the job read them over SSH.

Opening a libvirt connection costs a TCP handshake, an RPC handshake and a driver open on
the host, and a drain paid it five times per guest (locate on two hosts, the migration,
verify on two hosts). The engine gives each job one :class:`Connections`, current in every
call of its steps (:func:`current`) and closed when the job ends, however it ends.
libvirt connections are thread-safe, so a step's parallel items share them.

A connection found dead (keepalive, EOF) is dropped and one new connection opened in its
place; a dead one is never handed out again. libvirtd serves at most
``max_client_requests`` (default 5) calls of one connection at once and stops reading it
beyond that, keepalive included, while a migration holds its call for its whole length
and samples its statistics beside it (two calls at once). So at most
:data:`HOLDERS_PER_CONNECTION` blocks share a connection, which leaves a call free for
keepalive; a third gets a second connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from . import remote
from .hypervisor import Hypervisor
from .inventory import HostSpec

HOLDERS_PER_CONNECTION = 2

Connect = Callable[[str, str], Hypervisor]

_current: ContextVar[Connections | None] = ContextVar("evac_connections", default=None)


def current() -> Connections:
    """The connections of the job whose step runs in this thread; outside a job (an action
    called on its own, ``evac hosts``) one-shot ones, opened and closed around each use."""
    return _current.get() or Connections(keep=False)


@dataclass(eq=False)
class _Link:
    hv: Hypervisor
    holders: int = 0
    dead: bool = False


class Connections:
    """One job's libvirt connections, by host, and the bridges it read of each host.

    ``keep=False`` keeps nothing: every :meth:`use` opens and closes its own connection and
    every :meth:`bridges` reads afresh, which is what evac did before jobs shared them.
    ``connect`` defaults to :meth:`Hypervisor.connect`, looked up at each call.
    """

    def __init__(self, keep: bool = True, connect: Connect | None = None) -> None:
        self.keep = keep
        self._connect = connect
        self._lock = threading.Lock()
        self._links: dict[str, list[_Link]] = {}
        self._bridges: dict[str, dict[str, int]] = {}
        self._host_locks: dict[tuple[str, str], threading.Lock] = {}
        self._closed = False
        self.opened = 0

    @contextmanager
    def as_current(self) -> Iterator[Connections]:
        """These are :func:`current` in this thread inside the block."""
        reset = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(reset)

    @contextmanager
    def use(self, host: HostSpec) -> Iterator[Hypervisor]:
        """The host's connection for the block; do not close it. It stays open for the
        rest of the job unless it died in the block (then it is dropped)."""
        if not self.keep or self._closed:
            with self._open(host) as hv:
                yield hv
            return
        link = self._checkout(host)
        try:
            yield link.hv
        except BaseException:
            if not link.hv.alive():
                link.dead = True
            raise
        finally:
            self._checkin(host.name, link)

    def bridges(self, host: HostSpec) -> dict[str, int]:
        """The host's bridges and MTUs, read over SSH the first time the job asks (the drain's
        plan, beside its fleet snapshot) and reused by every later ask (each migration's
        check); a read that failed is not kept, so the next ask reads again."""
        assert host.ssh is not None, f"{host.name}: no ssh settings"
        if not self.keep:
            return remote.bridges(host.ssh, max_age=0)
        with self._host_lock("ssh", host.name):
            found = self._bridges.get(host.name)
            if found is None:
                found = remote.bridges(host.ssh, max_age=0)
                self._bridges[host.name] = found
        return dict(found)

    def close(self) -> None:
        """The job ended: close every connection (one a straggling call still holds, a step
        that timed out, when it lets go); a later :meth:`use` gets a one-shot one."""
        with self._lock:
            self._closed = True
            links = [link for group in self._links.values() for link in group]
            self._links.clear()
            self._bridges.clear()
            idle = [link for link in links if link.holders == 0]
        for link in idle:
            link.hv.close()

    def _open(self, host: HostSpec) -> Hypervisor:
        connect = self._connect or Hypervisor.connect
        hv = connect(host.name, host.uri)
        with self._lock:
            self.opened += 1
        return hv

    def _host_lock(self, kind: str, host: str) -> threading.Lock:
        with self._lock:
            return self._host_locks.setdefault((kind, host), threading.Lock())

    def _checkout(self, host: HostSpec) -> _Link:
        """A live connection to the host with room for one more holder, opened if none has
        room; one opening at a time per host, so parallel first users share one."""
        with self._host_lock("libvirt", host.name):
            stale: list[_Link] = []
            with self._lock:
                group = self._links.setdefault(host.name, [])
                for link in list(group):
                    if link.dead or not link.hv.alive():
                        link.dead = True
                        group.remove(link)
                        if link.holders == 0:
                            stale.append(link)
                roomy = [link for link in group if link.holders < HOLDERS_PER_CONNECTION]
                chosen = min(roomy, key=lambda link: link.holders) if roomy else None
                if chosen is not None:
                    chosen.holders += 1
            for link in stale:
                link.hv.close()
            if chosen is not None:
                return chosen
            chosen = _Link(self._open(host), holders=1)
            with self._lock:
                if not self._closed:
                    self._links.setdefault(host.name, []).append(chosen)
                    return chosen
            chosen.dead = True  # the job ended while it opened: closed at check-in
            return chosen

    def _checkin(self, host: str, link: _Link) -> None:
        with self._lock:
            link.holders -= 1
            group = self._links.get(host, [])
            if link.dead and link in group:
                group.remove(link)
            done = link.holders == 0 and (link.dead or self._closed)
        if done:
            link.hv.close()
