"""Evidence from the hosts' agents: a lease held is a host alive, for free.

Probing every host costs the controller CPU per host, all the time; an agent's lease
costs it nothing: etcd keeps it, and the controllers' :class:`evac.agents.AgentView`
follows it with one watch. So the ``agent`` source says *alive* while a host's agent
holds its lease and *dead* ("agent lease expired") once the lease is gone while the
agent's last word was ``running``. A clean stop (``stopped``) is no death: the source
then says nothing (*unknown*), and the host is probed as any host without an agent.

While the agent holds its lease the watch *vouches* for the host (:class:`evac.evidence.Vouching`),
so the monitor hushes its probes. It vouches only on a fresh view: a controller that
cannot read etcd no longer hears of leases lost, and probes again as it did before.
Hosts whose agent never ran get no verdict from this source: they keep today's probes.
A host whose agent starts later is followed from then on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .agents import RUNNING, AgentState
from .errors import JournalError
from .evidence import Evidence, Report, Rule, Verdict
from .inventory import HostSpec

EXPIRED = "agent lease expired"


class Leases(Protocol):
    """What the source reads of :class:`evac.agents.AgentView`; unit specs give a fake."""

    @property
    def states(self) -> Mapping[str, AgentState]: ...

    @property
    def changed(self) -> list[Callable[[], None]]: ...

    @property
    def read_at(self) -> float: ...

    def holds_lease(self, host: str) -> bool | None: ...

    def refresh(self) -> None: ...


@dataclass
class AgentSource:
    """The agents' leases as evidence. ``every``: how often each host's thread looks at
    the view by itself, beside the pushes (a view gone stale is noticed so); ``stale_after``:
    a view read longer ago than this vouches for nobody (the lease TTL: by then a lease
    this controller did not hear of may have expired)."""

    view: Leases
    every: float = 1.0
    stale_after: float = 3.0
    clock: Callable[[], float] = time.monotonic
    name: str = "agent"
    rule: Rule = field(default_factory=Rule)
    _first_read: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def watch(self, host: HostSpec, report: Report) -> AgentWatch:
        with self._first_read:
            if self.view.read_at == -math.inf:
                try:
                    self.view.refresh()  # so a lease already held hushes the probes from the first round
                except JournalError:
                    pass  # etcd away: the view follows it once it answers
        return AgentWatch(self, host.name, report)


class AgentWatch:
    """One host's lease: pushes a change of verdict the moment the view reads it."""

    def __init__(self, source: AgentSource, host: str, report: Report) -> None:
        self.source, self.host = source, host
        self.every = source.every
        self._report = report
        self._said = Verdict.UNKNOWN  # no opinion until an agent says something
        self._lock = threading.Lock()
        source.view.changed.append(self._changed)
        self._changed()

    def vouches(self) -> bool:
        view = self.source.view
        fresh = self.source.clock() - view.read_at <= self.source.stale_after
        return fresh and view.holds_lease(self.host) is True

    def poll(self) -> Evidence | None:
        return self._news()

    def close(self) -> None:
        try:
            self.source.view.changed.remove(self._changed)
        except ValueError:
            pass

    def _changed(self) -> None:
        evidence = self._news()
        if evidence is not None:
            self._report(evidence)

    def _news(self) -> Evidence | None:
        """The verdict the view shows now, when it differs from the last one given."""
        verdict, detail = self._verdict()
        with self._lock:
            if verdict is self._said:
                return None
            self._said = verdict
        return Evidence(self.source.name, self.host, verdict, detail)

    def _verdict(self) -> tuple[Verdict, str]:
        view = self.source.view
        holds = view.holds_lease(self.host)
        if holds:
            return Verdict.ALIVE, "agent holds its lease"
        state = view.states.get(self.host)
        if holds is None or state is None:
            return Verdict.UNKNOWN, "no agent"
        if state.state == RUNNING:
            return Verdict.DEAD, EXPIRED
        return Verdict.UNKNOWN, f"agent {state.state}: {state.reason or 'stopped cleanly'}"
