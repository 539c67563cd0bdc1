"""What runs where, always: each host's running guests' definitions, saved to the journal.

A dead host cannot be asked what it ran, so failover restarts guests from the last
snapshot. The service takes snapshots whether or not its monitor acts (a failover may
come from an alert alone): when it starts, every ``every`` seconds, and at once on each
libvirt lifecycle event of a guest (started, stopped, migrated). A host that cannot be
reached keeps its last snapshot: that is the one a failover needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .app import App
from .errors import EvacError
from .fleet import reachable
from .hypervisor import Hypervisor
from .inventory import HostSpec

log = logging.getLogger("evac.snapshots")
Connect = Callable[[str, str], Hypervisor]


KEPT = ("running", "paused", "crashed")


def take_snapshot(app: App, host: str, hv: Hypervisor) -> int:
    """Save the definitions of the host's guests that run, or ran until a fault stopped
    them; returns how many. A host dying piecemeal (its QEMUs killed before libvirtd,
    say) must not leave a snapshot that says it ran nothing."""
    definitions = {
        g.name: hv.domain_xml(g.name, migratable=True) for g in hv.guests(app.inventory.is_shared) if g.state in KEPT
    }
    app.journal.save_definitions(host, definitions)
    return len(definitions)


class Snapshotter:
    def __init__(
        self,
        app: App,
        every: float = 5.0,
        connect: Connect = lambda name, uri: Hypervisor.connect(name, uri, keepalive=(2, 3)),
        probe_timeout: float = 1.0,
    ) -> None:
        self.app = app
        self.every = every
        self.connect = connect
        self.probe_timeout = probe_timeout
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wakes: list[threading.Event] = []

    def start(self) -> None:
        for spec in self.app.inventory.hosts:
            thread = threading.Thread(target=self._watch, args=(spec,), daemon=True, name=f"snapshot-{spec.name}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for wake in self._wakes:
            wake.set()
        for thread in self._threads:
            thread.join(10)

    def ages(self) -> dict[str, float | None]:
        """Seconds since each host's last snapshot (None: never taken)."""
        now = time.time()
        taken = {spec.name: self.app.journal.snapshot_taken(spec.name) for spec in self.app.inventory.hosts}
        return {host: None if ts is None else round(now - ts, 1) for host, ts in taken.items()}

    def _watch(self, spec: HostSpec) -> None:
        changed = threading.Event()
        self._wakes.append(changed)
        hv: Hypervisor | None = None
        while not self._stop.is_set():
            if hv is not None and not hv.alive():
                hv.close()
                hv = None
            if hv is None:
                hv = self._connect(spec, changed)
            if hv is not None:
                try:
                    take_snapshot(self.app, spec.name, hv)
                except EvacError as exc:
                    log.debug("snapshot of %s: %s", spec.name, exc)
            changed.wait(self.every)
            changed.clear()
        if hv is not None:
            hv.close()

    def _connect(self, spec: HostSpec, changed: threading.Event) -> Hypervisor | None:
        if not reachable(spec.uri, self.probe_timeout):
            return None
        try:
            hv = self.connect(spec.name, spec.uri)
            hv.on_lifecycle(lambda _guest: changed.set())
            hv.on_close(lambda _reason: changed.set())
        except EvacError as exc:
            log.debug("snapshots of %s: %s", spec.name, exc)
            return None
        return hv
