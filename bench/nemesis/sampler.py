"""What libvirt says on every host, every 0.25 s, through each host's read-only unix
socket: it answers even while the host is cut off the network, so a cut host's guests
are seen. A powered-off host does not answer (and its QEMUs died with it)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import libvirt

from evac.lab import Lab

from .invariants import Sample

EVERY = 0.25  # s: the issue asks for at least every 0.5 s


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every refused connection to stderr otherwise."""


libvirt.registerErrorHandler(_silence, None)


class Sampler:
    def __init__(self, lab: Lab, t0: float) -> None:
        self.lab, self.t0 = lab, t0
        self.wall0 = time.time() - (time.monotonic() - t0)  # t0 on the wall clock (the journal's)
        self.samples: list[Sample] = []
        self.conns: dict[str, libvirt.virConnect] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nemesis-sampler", daemon=True)
        self.gaps = 0  # rounds slower than 0.5 s
        self._lock = threading.Lock()  # the loop and the run's settle checks share the connections

    def uri(self, host: str) -> str:
        return f"qemu+unix:///system?socket={Path(self.lab.host_dir(host)) / 'run' / 'libvirt-sock-ro'}"

    def _conn(self, host: str) -> libvirt.virConnect | None:
        conn = self.conns.get(host)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
            self.conns.pop(host, None)
        try:
            conn = libvirt.openReadOnly(self.uri(host))
        except libvirt.libvirtError:
            return None
        self.conns[host] = conn
        return conn

    def listing(self, host: str, flags: int) -> frozenset[str] | None:
        with self._lock:
            return self._listing(host, flags)

    def _listing(self, host: str, flags: int) -> frozenset[str] | None:
        conn = self._conn(host)
        if conn is None:
            return None
        try:
            return frozenset(d.name() for d in conn.listAllDomains(flags))
        except libvirt.libvirtError:
            self.conns.pop(host, None)
            return None

    def incoming(self) -> str | None:
        """A host where a guest waits paused for an incoming migration while it runs on
        another host: a migration's destination, mid-flight."""
        running = self.sample().running
        with self._lock:
            for host in self.lab.host_names():
                conn = self._conn(host)
                if conn is None:
                    continue
                try:
                    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED):
                        _, reason = dom.state()
                        elsewhere = any(dom.name() in gs for h, gs in running.items() if h != host)
                        if reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION and elsewhere:
                            return host
                except libvirt.libvirtError:
                    continue
        return None

    def sample(self) -> Sample:
        t = time.monotonic() - self.t0
        running = {}
        for host in self.lab.host_names():
            names = self.listing(host, libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)
            if names is not None:
                running[host] = names
        return Sample(t, running)

    def defined(self) -> dict[str, frozenset[str]]:
        """Every guest defined on each answering host (``virsh list --all``)."""
        found = {}
        for host in self.lab.host_names():
            names = self.listing(host, 0)
            if names is not None:
                found[host] = names
        return found

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self.samples.append(self.sample())
            now = time.monotonic()
            if now - last > 0.5:
                self.gaps += 1
            last = now
            self._stop.wait(EVERY)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self.conns.values():
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        self.conns.clear()
