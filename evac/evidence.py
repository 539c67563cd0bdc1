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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from .errors import EvacError
from .inventory import HostSpec


@dataclass(frozen=True)
class MonitorSettings:
    """How fast the monitor looks and how long it waits; the defaults detect a dead host
    in about two seconds without fencing a host for one dropped packet."""

    interval: float = 0.5  # between probes
    suspect_interval: float = 0.1  # between probes while a host is suspect: confirm fast
    probe_timeout: float = 1.0
    keepalive: tuple[int, int] = (1, 3)  # libvirt keepalive: interval s, missed replies
    confirm_misses: int = 2
    power_every: float = 2.0  # BMC polls (0: never)
    settle: float = 0.5  # wait before failing over, so hosts failing together engage the storm brake
    settle_max: float = 6.0  # ...and up to this long while other hosts are still only suspect


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


@dataclass
class PolledWatch:
    """A watch that only asks: ``read()`` on every poll, nothing pushed, nothing to close."""

    read: Callable[[], Evidence | None]
    every: float = 0.0

    def poll(self) -> Evidence | None:
        return self.read()

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
    the moment libvirt notices (keepalive, EOF); the poll reconnects when it is gone."""

    connect: Callable[[HostSpec], Connection]  # raises EvacError when the host does not answer
    name: str = "libvirt"
    rule: Rule = Rule()

    def watch(self, host: HostSpec, report: Report) -> LibvirtWatch:
        return LibvirtWatch(self.name, host, self.connect, report)


class LibvirtWatch:
    every = 0.0

    def __init__(self, source: str, host: HostSpec, connect: Callable[[HostSpec], Connection], report: Report) -> None:
        self.source, self.host = source, host
        self._connect, self._report = connect, report
        self._conn: Connection | None = None

    def poll(self) -> Evidence | None:
        if self._conn is not None and not self._conn.alive():
            self._conn.close()
            self._conn = None
            return self._lost("no connection")  # reconnect on the next round
        if self._conn is not None:
            # Nothing new: a drop arrives through the close callback, and saying "alive"
            # here could overwrite a loss it pushed a moment ago.
            return None
        try:
            conn = self._connect(self.host)
        except EvacError:
            return self._lost("no connection")
        conn.on_close(lambda reason: self._report(self._lost(reason)))
        self._conn = conn
        return Evidence(self.source, self.host.name, Verdict.ALIVE)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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

        return PolledWatch(read)


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

        return PolledWatch(read, self.every)
