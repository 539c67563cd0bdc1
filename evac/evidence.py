"""Evidence about a host: what one source saw, as a typed verdict.

The monitor does not decide from raw signals. Each source reports :class:`Evidence`
(alive, dead or unknown) and :mod:`evac.health` weighs the latest from every source by
that source's :class:`Rule`. The built-in sources are libvirt's keepalive connection,
a port probe and the BMC's power reading; plugins add others (other replicas' views,
agents' leases) through the ``evac_evidence_sources`` hook, so a new kind of evidence
plugs in here instead of rewriting the monitor.

A source is watched per host: ``source.watch(host, report)`` gives a :class:`Watch`
(or None when the source has nothing to say about that host). The host's thread polls
it every ``every`` seconds (0: every round, ``math.inf``: never), and the source may
also push evidence at any moment through ``report`` (libvirt's close callback, an etcd
watch): a push wakes the host's thread, so a failure never waits for the next poll.

Watching costs the controller CPU for every host, all the time. A watch that can vouch
for its host by itself (:class:`Vouching`: the host's agent holds its lease, which etcd
keeps for nothing) lets the monitor *hush* the others (:class:`Hushable`) while the host
is up: the probe and the BMC are not asked, and the libvirt connection is held without
keepalive, so a dead host's EOF still arrives at once. Any evidence of death (a lease
gone, an EOF) ends the hush, and every watch is asked again at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from .errors import EvacError
from .inventory import HostSpec


@dataclass(frozen=True)
class MonitorSettings:
    """How fast the monitor looks and how long it waits; the defaults detect a dead host
    in about two seconds without fencing a host for one dropped packet."""

    interval: float = 0.5  # between probes
    suspect_interval: float = 0.1  # between probes while a host is suspect: confirm fast
    probe_timeout: float = 1.0
    connect_timeout: float = 5.0  # libvirt.open has none of its own: slower counts as no connection
    keepalive: tuple[int, int] = (1, 3)  # libvirt keepalive: interval s, missed replies
    confirm_misses: int = 2
    power_every: float = 2.0  # BMC polls (0: never)
    settle: float = 0.0  # a wait before every failover (0: none: a host that failed alone goes at once)
    settle_max: float = 6.0  # the longest a failover waits while other hosts are in doubt (suspect)
    brake_every: float = 2.0  # journal reads for a storm brake released or engaged elsewhere
    quiet_interval: float = 5.0  # longest sleep of a hushed host's thread; pushes wake it at once


class Verdict(StrEnum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # no opinion: the source cannot tell (a lease not seen yet)


@dataclass(frozen=True)
class Evidence:
    source: str  # the reporting source's name: its rule is looked up by it
    host: str
    verdict: Verdict
    detail: str = ""  # what was seen, for a person: "libvirt connection lost: keepalive"
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Rule:
    """How health weighs one source's dead verdicts.

    ``confirm``: dead verdicts in a row before the loss is confirmed (a probe may drop a
    packet; a connection's close is final at once). ``conclusive``: a confirmed loss is
    proof alone (the BMC reads the power off); otherwise it is one of the independent
    confirmed losses health requires. A source that needs a majority (other replicas'
    views) counts its votes itself and reports dead once the majority says so.
    """

    confirm: int = 1
    conclusive: bool = False


Report = Callable[[Evidence], None]


class Watch(Protocol):
    """One source watching one host."""

    @property
    def every(self) -> float:
        """Seconds between polls: 0 polls every round of the host's loop, ``math.inf`` never."""
        ...

    def poll(self) -> Evidence | None:
        """What the source sees now; None when it has nothing new to say."""
        ...

    def close(self) -> None:
        """Stop watching: close connections, end watch threads."""
        ...


@runtime_checkable
class Vouching(Protocol):
    """A watch that can tell, by itself and for free, that its host is alive."""

    def vouches(self) -> bool:
        """True while this watch alone shows the host alive (its agent holds its lease)."""
        ...


@runtime_checkable
class Hushable(Protocol):
    """A watch that drops what it costs while another watch vouches for the host."""

    def hush(self, quiet: bool) -> None:
        """Called when the host becomes vouched for and up (True) or no longer (False);
        its ``every`` then says when it wants polling while hushed (``math.inf``: never)."""
        ...


class EvidenceSource(Protocol):
    @property
    def name(self) -> str:
        """Unique among the monitor's sources: ``libvirt``, ``probe``, ``power``, ``lease``."""
        ...

    @property
    def rule(self) -> Rule: ...

    def watch(self, host: HostSpec, report: Report) -> Watch | None:
        """Start watching ``host``; ``report`` takes pushed evidence from any thread.
        None when this source cannot tell anything about the host (no BMC configured)."""
        ...


class PolledWatch:
    """A watch that only asks: ``read()`` on every poll, nothing pushed, nothing to close.
    A ``hushable`` one (a probe, a BMC poll) is not asked while the host is vouched for."""

    def __init__(self, read: Callable[[], Evidence | None], every: float = 0.0, *, hushable: bool = False) -> None:
        self.read = read
        self.interval = every
        self.hushable = hushable
        self.hushed = False

    @property
    def every(self) -> float:
        return math.inf if self.hushed else self.interval

    def hush(self, quiet: bool) -> None:
        self.hushed = quiet and self.hushable

    def poll(self) -> Evidence | None:
        return None if self.hushed else self.read()

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- libvirt keepalive


class Connection(Protocol):
    """What the libvirt source needs of a connection (:class:`evac.hypervisor.Hypervisor` is one)."""

    def alive(self) -> bool: ...

    def close(self) -> None: ...

    def on_close(self, callback: Callable[[str], None]) -> None: ...


@dataclass(frozen=True)
class LibvirtSource:
    """The monitor's own connection with keepalive. Its close callback pushes the loss
    the moment libvirt notices (keepalive, EOF); the poll reconnects when it is gone.

    While the host is hushed the connection is made with ``connect_quiet`` instead: no
    keepalive, whose pings are what a connection costs. An idle TCP connection still
    reports EOF the moment the host's processes die; a host cut off is told by its lease
    instead, and the un-hushed watch then reconnects with keepalive at once, which a cut
    host does not answer."""

    connect: Callable[[HostSpec], Connection]  # raises EvacError when the host does not answer
    connect_quiet: Callable[[HostSpec], Connection] | None = None  # None: ``connect`` either way
    name: str = "libvirt"
    rule: Rule = Rule()

    def watch(self, host: HostSpec, report: Report) -> LibvirtWatch:
        return LibvirtWatch(self.name, host, self.connect, report, self.connect_quiet)


class LibvirtWatch:
    def __init__(
        self,
        source: str,
        host: HostSpec,
        connect: Callable[[HostSpec], Connection],
        report: Report,
        connect_quiet: Callable[[HostSpec], Connection] | None = None,
    ) -> None:
        self.source, self.host = source, host
        self._connect, self._report = connect, report
        self._connect_quiet = connect_quiet or connect
        self._conn: Connection | None = None  # only its close is a loss, not one dropped on purpose
        self._quiet = False
        self._lock = threading.Lock()

    @property
    def every(self) -> float:
        return math.inf if self._quiet and self._conn is not None else 0.0

    def hush(self, quiet: bool) -> None:
        if quiet == self._quiet:
            return
        self._quiet = quiet
        self._drop()  # the next poll connects again, with keepalive or without

    def poll(self) -> Evidence | None:
        if self._conn is not None and not self._conn.alive():
            self._drop()
            return self._lost("no connection")  # reconnect on the next round
        if self._conn is not None:
            # Nothing new: a drop arrives through the close callback, and saying "alive"
            # here could overwrite a loss it pushed a moment ago.
            return None
        try:
            conn = (self._connect_quiet if self._quiet else self._connect)(self.host)
        except EvacError:
            return self._lost("no connection")
        with self._lock:
            self._conn = conn
        conn.on_close(lambda reason: self._closed(conn, reason))
        if not conn.alive():  # closed before the callback was there to tell
            self._drop()
            return self._lost("no connection")
        return Evidence(self.source, self.host.name, Verdict.ALIVE)

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _closed(self, conn: Connection, reason: str) -> None:
        with self._lock:
            current = conn is self._conn
        if current:
            self._report(self._lost(reason))

    def _lost(self, reason: str) -> Evidence:
        return Evidence(self.source, self.host.name, Verdict.DEAD, f"libvirt connection lost: {reason}")


# ---------------------------------------------------------------- port probe


@dataclass(frozen=True)
class ProbeSource:
    """Anything answering on the host's libvirt or SSH port: a crashed libvirtd on a live
    host still answers SSH, so it is not taken for a dead host."""

    probe: Callable[[HostSpec], bool]
    name: str = "probe"
    rule: Rule = Rule(confirm=2)

    def watch(self, host: HostSpec, report: Report) -> PolledWatch:
        def read() -> Evidence:
            if self.probe(host):
                return Evidence(self.name, host.name, Verdict.ALIVE)
            return Evidence(self.name, host.name, Verdict.DEAD, "probe missed")

        return PolledWatch(read, hushable=True)


# ---------------------------------------------------------------- BMC power


@dataclass(frozen=True)
class PowerSource:
    """The BMC's power reading: ``off`` is proof alone, whatever the network says.
    A BMC that does not answer (``unknown``) says nothing, so its last reading stands."""

    power: Callable[[HostSpec], str]  # "on", "off" or "unknown"
    every: float = 2.0  # BMCs are slow and rate-limited: not every round (0: never)
    name: str = "power"
    rule: Rule = Rule(conclusive=True)

    def watch(self, host: HostSpec, report: Report) -> PolledWatch | None:
        if not self.every:
            return None

        def read() -> Evidence | None:
            state = self.power(host)
            if state == "on":
                return Evidence(self.name, host.name, Verdict.ALIVE)
            if state == "off":
                return Evidence(self.name, host.name, Verdict.DEAD, "power is off (BMC)")
            return None

        return PolledWatch(read, self.every, hushable=True)
