"""A round on a daemon thread every few seconds, as the services of ``evac serve`` run
them (the reserve watch, the periodic rebalance): one bad round is logged and the next
tries again; ``stop`` ends it within one wait."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("evac.periodic")


class Periodic:
    """Calls :meth:`tick` every ``every`` seconds from :meth:`start` until :meth:`stop`."""

    def __init__(self, every: float, name: str) -> None:
        self.every = every
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def tick(self) -> object:
        """One round (a subclass's); what it returns is for tests."""
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except Exception:  # the service outlives one bad round (etcd away, a host mid-answer)
                log.exception("%s: round failed; the next one tries again", self.name)
