"""A fenced host that answers again, and what it must lose before it gets guests.

Its guests were restarted elsewhere while it was off, so its definitions of them are
stale: one started by hand, by autostart or by a later move would be a second copy of a
guest. Two paths may see such a host first, and both clean it here: the monitor when it
connects to it again, and the ``host.enable`` step, which may come before the monitor
(enabled, the host is no longer "fenced", and the monitor's cleaning would pass it by).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .appview import AppView
from .errors import EvacError, NotFound
from .fleet import snapshot
from .inventory import HostSpec
from .model import ACTIVE, Guest, HostStatus
from .states import Health

log = logging.getLogger(__name__)


class Cleanable(Protocol):
    """What cleaning needs of a connection to the host: :class:`Hypervisor` is one."""

    def guests(self, is_shared: Callable[[str | None], bool] = ...) -> tuple[Guest, ...]: ...

    def destroy(self, name: str) -> None: ...

    def undefine(self, name: str) -> None: ...


@dataclass
class Cleaning:
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # guest -> why it is still there


def stale(host: str, own: Iterable[Guest], fleet: Iterable[HostStatus]) -> list[Guest]:
    """The guests of ``host`` that run on another host that is up: those are the real ones."""
    elsewhere = {
        g.name for h in fleet if h.name != host and h.state == Health.UP for g in h.guests if g.state in ACTIVE
    }
    return [g for g in own if g.name in elsewhere]


def clean(app: AppView, spec: HostSpec, hv: Cleanable, guard: Callable[[], object] = lambda: None) -> Cleaning:
    """Remove ``spec``'s copies of guests that run elsewhere (destroyed first if running,
    which cannot happen after a real fence: never leave two). ``guard`` before each change
    (a job's: a deposed owner must not touch the host). One already gone (the monitor and a
    return cleaning at once) counts as removed."""
    cleaning = Cleaning()
    own = hv.guests(app.inventory.is_shared)
    for guest in stale(spec.name, own, snapshot(app.inventory, skip=(spec.name,))):
        guard()
        try:
            if guest.state in ACTIVE:
                hv.destroy(guest.name)
            hv.undefine(guest.name)
        except NotFound:
            pass
        except EvacError as exc:
            log.warning("cleaning %s on %s: %s", guest.name, spec.name, exc)
            cleaning.failed[guest.name] = str(exc)
            continue
        cleaning.removed.append(guest.name)
    return cleaning
