"""Who may act on what the monitor sees: one controller alone, or replicas that agree.

With the embedded journal one ``evac serve`` watches the fleet and acts on its own view
(:class:`Solo`). With the journal on etcd several replicas watch it together
(:class:`evac.replicas.Replicas`): each publishes what it sees, one leader acts, and a
host is failed over only when enough replicas that can reach etcd see it dead, so a
host unreachable from one controller alone is never fenced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .events import Event
from .states import Health


@dataclass(frozen=True)
class Agreement:
    """Whether this controller may fail a host over now, and why (or why not)."""

    ok: bool
    why: str


class Coordination(Protocol):
    def start(self, emit: Callable[[Event], None]) -> None:
        """Begin (elect, publish); ``emit`` reports leadership and quorum changes."""
        ...

    def stop(self) -> None:
        """Step down at once, so another replica leads without waiting for a lease to expire."""
        ...

    def leads(self) -> bool:
        """Whether this controller may decide failovers and resume orphaned jobs now."""
        ...

    def publish(self, host: str, health: Health, reason: str) -> None:
        """This controller's view of a host, for the others to count."""
        ...

    def agreed_down(self, host: str) -> Agreement:
        """May this controller fail ``host`` over: it leads and enough replicas see it dead."""
        ...

    def status(self) -> dict[str, Any]:
        """For ``/healthz``: the role, the leader and whether etcd answers."""
        ...


class Solo:
    """One controller on an embedded journal: its own view decides."""

    def start(self, emit: Callable[[Event], None]) -> None:
        pass

    def stop(self) -> None:
        pass

    def leads(self) -> bool:
        return True

    def publish(self, host: str, health: Health, reason: str) -> None:
        pass

    def agreed_down(self, host: str) -> Agreement:
        return Agreement(True, "one controller")

    def status(self) -> dict[str, Any]:
        return {"mode": "solo"}
