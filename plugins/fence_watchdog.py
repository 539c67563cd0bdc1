"""Fence method ``watchdog``: a host without a BMC, fenced by its own watchdog.

``fence: [{method: watchdog}]`` (alone, or after a BMC method that may die with its
host) presses nothing. "Power off" waits until the host's agent lost its lease and the
watchdog it armed has had its timeout plus the margin to reset the host, with the
checks of :meth:`evac.agents.AgentView.self_fenced`; it fails at once for a host whose
agent stopped cleanly (its watchdog is disarmed) or never ran, so the chain moves on.
It fails at once too for a host whose agent last acknowledged HA disarmed (``evac ha
disarm``): such an agent feeds its watchdog whatever happens, and may still run.
The rule and its timings are in :mod:`evac.selffence` and docs/ha.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from evac import hookimpl
from evac.agent import acknowledged, host_address
from evac.agents import AgentView
from evac.appview import AppView
from evac.errors import FencingError, JournalError
from evac.fencing import FenceMethod
from evac.fleet import answers, reachable
from evac.inventory import HostSpec
from evac.selffence import Acknowledged, Timings, watchdog_counts

POLL = 0.1


class WatchdogFence:
    """One host's self-fence, judged by the leader from etcd."""

    def __init__(self, host: HostSpec, view: AgentView, timings: Timings, port: int, peers: tuple[str, ...]) -> None:
        self.host = host
        self.view = view
        self.peers = peers
        self.timings = timings
        self.port = port
        self.confirmed = ""

    def answers(self) -> bool:
        """Anything of the host still answering: libvirt, SSH, or its agent's port."""
        return answers(self.host, 0.3) or reachable(f"http://{host_address(self.host)}:{self.port}", 0.3)

    def power_off(self) -> None:
        """Wait for the watchdog to have reset the host; ``FencingError`` when it never will
        be counted, or when the wait outlasts the worst case the timings allow."""
        # twice the worst case: agents that renewed their leases late restart the wait (evac/agents.py)
        limit = 2 * self.timings.worst_case() + 2 * self.view.cluster.settings.timeout + 5.0
        deadline = time.monotonic() + limit
        pause = threading.Event()
        while True:
            before = self.acknowledged()
            verdict, why = self.view.self_fenced(self.host.name, self.timings, self.answers, self.peers)
            counts, ha = watchdog_counts(self.host.name, before, self.acknowledged())
            if verdict is not False and counts is False:
                raise FencingError(f"not fenced by watchdog: {ha}")
            if verdict and counts:
                self.confirmed = f"{why}; {ha}"
                # Counted once: the host may come back without its agent, and must not be
                # counted fenced again until a new start of its agent arms a watchdog.
                self.view.unarm(self.host.name, f"counted fenced by its watchdog: {why}")
                return
            if verdict is False:
                raise FencingError(f"not fenced by watchdog: {why}")
            if time.monotonic() > deadline:
                raise FencingError(f"watchdog fence not confirmed within {limit:.0f} s: {why if not verdict else ha}")
            pause.wait(POLL)

    def acknowledged(self) -> Acknowledged | None:
        """What the host's agent record acknowledges of HA; None while etcd does not answer.
        Read before and after the rest of the count: it counts only unchanged in between."""
        try:
            return acknowledged(self.view.cluster, self.view.prefix, self.host.name)
        except JournalError:
            return None

    def power_state(self) -> str:
        """``off`` once confirmed; ``on`` while the agent holds its lease; else ``unknown``."""
        if self.confirmed:
            return "off"
        try:
            self.view.refresh()
        except JournalError:
            return "unknown"
        return "on" if self.view.holds_lease(self.host.name) else "unknown"


def unbound(host: HostSpec, settings: Mapping[str, Any]) -> WatchdogFence:
    raise FencingError(f"{host.name}: fence method watchdog needs the running evac (its etcd view of the agents)")


def bound(host: HostSpec, settings: Mapping[str, Any], app: AppView) -> WatchdogFence:
    agent = app.settings.agent
    view = getattr(app, "agents", None)
    if agent is None or view is None:
        raise FencingError(
            f"{host.name}: fence method watchdog needs an agent: section and the journal on etcd (docs/ha.md)"
        )
    peers = tuple(h.name for h in app.inventory.hosts if h.name != host.name)
    return WatchdogFence(host, view, agent.timings, agent.port, peers)


@hookimpl
def evac_fence_methods() -> list[FenceMethod]:
    return [
        FenceMethod(
            "watchdog",
            unbound,
            description="no BMC: the host's own watchdog, fed by evac agent only while it holds its etcd lease",
            with_app=bound,
        )
    ]
