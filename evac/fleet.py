"""A live snapshot of the fleet: every inventory host read through the adapter at once,
and for planning each host's bridges over SSH at the same time.

A host that does not answer is reported ``unreachable`` with the reason instead of
stalling the whole snapshot: its libvirt port is probed with a short timeout first,
because ``libvirt.open`` itself has no connect timeout.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from .appview import AppView
from .connections import Connections, current
from .errors import EvacError
from .guestrules import GuestSettings, resolve_all
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


def _unreachable(spec: HostSpec, error: str) -> HostStatus:
    return HostStatus(spec.name, spec.uri, "unreachable", error=error, tags=spec.tags)


def _read_live(inventory: Inventory, spec: HostSpec, connections: Connections) -> HostStatus:
    try:
        with connections.use(spec) as hv:
            return HostStatus(
                name=spec.name,
                uri=spec.uri,
                state=Health.UP,
                capacity=hv.capacity(),
                guests=hv.guests(inventory.is_shared),
                tags=spec.tags,
            )
    except EvacError as exc:
        return _unreachable(spec, str(exc))


def snapshot(
    inventory: Inventory, timeout: float = 1.0, skip: Iterable[str] = (), connections: Connections | None = None
) -> tuple[HostStatus, ...]:
    """Every host read at once; hosts in ``skip`` are reported down without being asked."""
    statuses, _ = survey(inventory, connections or Connections(keep=False), timeout, skip, bridges=False)
    return statuses


def survey(
    inventory: Inventory,
    connections: Connections,
    timeout: float = 1.0,
    skip: Iterable[str] = (),
    bridges: bool = True,
) -> tuple[tuple[HostStatus, ...], dict[str, dict[str, int] | None]]:
    """The snapshot, and each host's bridges and MTUs over SSH, read beside its libvirt read
    rather than after the whole snapshot: a plan waits for the slower of the two, not their
    sum. Bridges are None where unknown (a host not up, without SSH settings, or whose read
    failed), and placement does not check them there. A host whose libvirt port does not
    answer is not asked over SSH, which would cost a whole SSH timeout."""
    skipped = set(skip)
    workers = min(32, len(inventory.hosts)) or 1

    def read_bridges(spec: HostSpec) -> dict[str, int] | None:
        try:
            return connections.bridges(spec)
        except EvacError:
            return None

    with ThreadPoolExecutor(workers) as libvirt_pool, ThreadPoolExecutor(workers) as ssh_pool:

        def one(spec: HostSpec) -> tuple[HostStatus, dict[str, int] | None]:
            if spec.name in skipped:
                return HostStatus(spec.name, spec.uri, Health.DOWN, error="skipped (fenced)", tags=spec.tags), None
            if not reachable(spec.uri, timeout):
                return _unreachable(spec, "libvirt port not answering"), None
            ssh = ssh_pool.submit(read_bridges, spec) if bridges and spec.ssh is not None else None
            status = _read_live(inventory, spec, connections)
            found = ssh.result() if ssh is not None else None
            return status, found if status.state == Health.UP else None

        read = list(libvirt_pool.map(one, inventory.hosts))
    return tuple(status for status, _ in read), {status.name: found for status, found in read}


def host_views(
    inventory: Inventory,
    hosts: tuple[HostStatus, ...],
    states: dict[str, HostState],
    bridges: dict[str, dict[str, int] | None],
    rules: GuestSettings = GuestSettings(),
) -> list[HostView]:
    """What placement needs, from the live snapshot, evac's host states and the inventory;
    every guest with its ``guests:`` rules resolved (:func:`evac.guestrules.resolve`)."""
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
                guests=resolve_all(status.guests, rules),
                reserved_memory_mib=spec.reserved_memory_mib,
                reserved_cpus=spec.reserved_cpus,
                spare=spec.spare,
                bridges=frozenset(found) if found is not None else None,
                bridge_mtus=tuple(sorted(found.items())) if found else (),
                networks=spec.networks,
            )
        )
    return views


def views(app: AppView) -> list[HostView]:
    """The placement view of the fleet as it runs now, through the job's connections (or
    short-lived ones), guests' rules resolved; hosts evac fenced are not probed (they are
    off). What every planner reads: drain, failover, return, rebalance, admission."""
    states = app.journal.host_states()
    fenced = {h for h, s in states.items() if s.state == HostMode.FENCED}
    statuses, bridges = survey(app.inventory, current(), skip=fenced)
    return host_views(app.inventory, statuses, states, bridges, GuestSettings.of(app.settings.sections))
