"""A live snapshot of the fleet: every inventory host read through the adapter at once.

A host that does not answer is reported ``unreachable`` with the reason instead of
stalling the whole snapshot: its libvirt port is probed with a short timeout first,
because ``libvirt.open`` itself has no connect timeout.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from .errors import EvacError
from .hypervisor import Hypervisor
from .inventory import HostSpec, Inventory
from .model import HostStatus

DEFAULT_PORTS = {"qemu+tcp": 16509, "qemu+tls": 16514, "qemu+ssh": 22, "qemu+libssh": 22, "qemu+libssh2": 22}


def reachable(uri: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(uri)
    if not parts.hostname:
        return True  # local socket URIs have no network to probe
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 16509)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_host(inventory: Inventory, spec: HostSpec, timeout: float = 1.0) -> HostStatus:
    if not reachable(spec.uri, timeout):
        return HostStatus(spec.name, spec.uri, "unreachable", error="libvirt port not answering", tags=spec.tags)
    try:
        with Hypervisor.connect(spec.name, spec.uri) as hv:
            return HostStatus(
                name=spec.name,
                uri=spec.uri,
                state="up",
                capacity=hv.capacity(),
                guests=hv.guests(inventory.is_shared),
                tags=spec.tags,
            )
    except EvacError as exc:
        return HostStatus(spec.name, spec.uri, "unreachable", error=str(exc), tags=spec.tags)


def snapshot(inventory: Inventory, timeout: float = 1.0) -> tuple[HostStatus, ...]:
    with ThreadPoolExecutor(max_workers=min(32, len(inventory.hosts))) as pool:
        return tuple(pool.map(lambda spec: read_host(inventory, spec, timeout), inventory.hosts))
