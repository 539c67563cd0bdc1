"""A live snapshot of the fleet: every inventory host read through the adapter at once.

A host that does not answer is reported ``unreachable`` with the reason instead of
stalling the whole snapshot: its libvirt port is probed with a short timeout first,
because ``libvirt.open`` itself has no connect timeout.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from . import remote
from .errors import EvacError
from .hypervisor import Hypervisor
from .inventory import HostSpec, Inventory
from .journal import HostState
from .model import HostStatus
from .placement import HostView
from .states import Health, HostMode

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


def answers(spec: HostSpec, timeout: float = 0.5) -> bool:
    """Does anything on the host answer, libvirt or SSH? Both ports are tried at once, so
    a silent (partitioned) host costs one timeout, not one per port."""
    ssh_host = spec.ssh.host if spec.ssh else urlsplit(spec.uri).hostname
    ssh_port = spec.ssh.port if spec.ssh else 22

    def ssh() -> bool:
        try:
            with socket.create_connection((ssh_host or "", ssh_port), timeout=timeout):
                return True
        except OSError:
            return False

    with ThreadPoolExecutor(max_workers=2) as pool:
        tries = [pool.submit(reachable, spec.uri, timeout), pool.submit(ssh)]
        return any(t.result() for t in tries)


def read_host(inventory: Inventory, spec: HostSpec, timeout: float = 1.0) -> HostStatus:
    if not reachable(spec.uri, timeout):
        return HostStatus(spec.name, spec.uri, "unreachable", error="libvirt port not answering", tags=spec.tags)
    try:
        with Hypervisor.connect(spec.name, spec.uri) as hv:
            return HostStatus(
                name=spec.name,
                uri=spec.uri,
                state=Health.UP,
                capacity=hv.capacity(),
                guests=hv.guests(inventory.is_shared),
                tags=spec.tags,
            )
    except EvacError as exc:
        return HostStatus(spec.name, spec.uri, "unreachable", error=str(exc), tags=spec.tags)


def snapshot(inventory: Inventory, timeout: float = 1.0, skip: Iterable[str] = ()) -> tuple[HostStatus, ...]:
    """Every host read at once; hosts in ``skip`` are reported down without being asked."""
    skipped = set(skip)

    def one(spec: HostSpec) -> HostStatus:
        if spec.name in skipped:
            return HostStatus(spec.name, spec.uri, Health.DOWN, error="skipped (fenced)", tags=spec.tags)
        return read_host(inventory, spec, timeout)

    with ThreadPoolExecutor(max_workers=min(32, len(inventory.hosts))) as pool:
        return tuple(pool.map(one, inventory.hosts))


def read_bridges(inventory: Inventory, hosts: tuple[HostStatus, ...]) -> dict[str, dict[str, int] | None]:
    """Each reachable host's bridges and MTUs over SSH; None where unknown (not checked then)."""

    def one(spec: HostSpec) -> dict[str, int] | None:
        if spec.ssh is None:
            return None
        try:
            return remote.bridges(spec.ssh)
        except EvacError:
            return None

    up = [inventory.host(h.name) for h in hosts if h.state == Health.UP]
    if not up:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(up))) as pool:
        return dict(zip((s.name for s in up), pool.map(one, up), strict=True))


def host_views(
    inventory: Inventory,
    hosts: tuple[HostStatus, ...],
    states: dict[str, HostState],
    bridges: dict[str, dict[str, int] | None],
) -> list[HostView]:
    """What placement needs, from the live snapshot, evac's host states and the inventory."""
    views = []
    for status in hosts:
        spec = inventory.host(status.name)
        cap = status.capacity
        recorded = states.get(status.name)
        # evac's own record wins for a reachable host, and always for a fenced one (it is not probed)
        state = (
            recorded.state
            if recorded and (status.state == Health.UP or recorded.state == HostMode.FENCED)
            else status.state
        )
        found = bridges.get(status.name)
        views.append(
            HostView(
                name=status.name,
                state=state,
                memory_mib=spec.capacity_memory_mib or (cap.memory_mib if cap else 0),
                cpus=spec.capacity_cpus or (cap.cpus if cap else 0),
                guests=status.guests,
                reserved_memory_mib=spec.reserved_memory_mib,
                reserved_cpus=spec.reserved_cpus,
                spare=spec.spare,
                bridges=frozenset(found) if found is not None else None,
                bridge_mtus=tuple(sorted(found.items())) if found else (),
                networks=spec.networks,
            )
        )
    return views
