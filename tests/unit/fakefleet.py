"""A fake fleet for specs that drive the real monitor: which hosts answer libvirt and the
probe, connections whose close callbacks the spec fires, and how often each host was probed."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from evac.errors import HostUnreachable
from evac.inventory import HostSpec
from evac.model import Guest

HOSTS = ("host1", "host2", "host3")


class FakeConnection:
    def __init__(self, fleet: Fleet, host: str) -> None:
        self.fleet, self.host = fleet, host
        self.closed = False
        self.callbacks: list[Callable[[str], None]] = []

    def alive(self) -> bool:
        return not self.closed and self.fleet.libvirt[self.host]

    def close(self) -> None:
        self.closed = True

    def on_close(self, callback: Callable[[str], None]) -> None:
        self.callbacks.append(callback)

    def guests(self, is_shared: Callable[[str | None], bool] = lambda _p: False) -> tuple[Guest, ...]:
        return ()

    def destroy(self, name: str) -> None:
        pass

    def undefine(self, name: str) -> None:
        pass


class Fleet:
    """Which hosts answer libvirt and the probe; the monitor's ``connect`` and ``probe``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.libvirt = dict.fromkeys(HOSTS, True)
        self.answering = dict.fromkeys(HOSTS, True)
        self.connections: list[FakeConnection] = []
        self.probes: Counter[str] = Counter()

    def connect(self, spec: HostSpec) -> FakeConnection:
        with self.lock:
            if not self.libvirt[spec.name]:
                raise HostUnreachable(f"{spec.name}: no answer")
            self.connections.append(FakeConnection(self, spec.name))
            return self.connections[-1]

    def probe(self, spec: HostSpec) -> bool:
        with self.lock:
            self.probes[spec.name] += 1
            return self.answering[spec.name]

    def kill(self, *hosts: str) -> None:
        """Hosts die at one instant; then libvirt notices (EOF) on each connection."""
        with self.lock:
            for host in hosts:
                self.libvirt[host] = self.answering[host] = False
            dropped = [c for c in self.connections if c.host in hosts and not c.closed]
        for conn in dropped:
            for callback in conn.callbacks:
                callback("eof")

    def mute(self, host: str) -> None:
        """The probe goes unanswered; libvirt's connection holds: the host is only suspect."""
        with self.lock:
            self.answering[host] = False

    def revive(self, host: str) -> None:
        with self.lock:
            self.libvirt[host] = self.answering[host] = True

    def cut(self, host: str) -> None:
        """Nothing answers; open connections notice nothing (no keepalive, no EOF)."""
        with self.lock:
            self.libvirt[host] = self.answering[host] = False

    def power_off(self, host: str) -> None:
        """Nothing answers, and every open connection reads EOF."""
        self.kill(host)
