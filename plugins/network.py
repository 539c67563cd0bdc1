"""Network: a guest only moves to a host that has every bridge it plugs into, under the
name that host gives it.

Bridges are read over SSH (``ip -o link show type bridge``) because libvirt's interface
driver reads ``/sys/class/net``, which is not a namespaced or containerised host's own
view. A job reads them once, beside the drain plan's fleet snapshot, and each
migration's check reuses that reading (``evac.connections``): an SSH round trip per guest
would cost more than the migration of an idle guest. A host without SSH settings is not
checked. Where the inventory maps a network to differently named bridges
(``networks: {vm: br-vm}``), the migration carries a destination XML and a persistent XML
with the target's names: without the second, the guest's next cold boot would look for
the source's bridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evac import hookimpl
from evac.connections import current
from evac.convergence import MigrationTuning
from evac.domainxml import with_bridges
from evac.errors import EvacError, MigrationError
from evac.inventory import HostSpec
from evac.model import Guest
from evac.networks import guest_renames


@hookimpl
def evac_migration_tuning(
    guest: Guest, source: HostSpec, target: HostSpec, options: Mapping[str, Any]
) -> MigrationTuning | None:
    wanted = [nic for nic in guest.interfaces if nic.kind == "bridge"]
    if not wanted:
        return None
    moved = guest_renames(guest, source.networks, target.networks)
    hosts = current()
    notes = []
    if target.ssh is not None:
        try:
            present = hosts.bridges(target)
        except EvacError as exc:
            raise MigrationError(f"{guest.name}: cannot check bridges on {target.name}: {exc}") from None
        for nic in wanted:
            bridge = moved.get(nic.source, nic.source)
            if bridge not in present:
                raise MigrationError(f"{guest.name}: {target.name} has no bridge '{bridge}'")
            if nic.mtu and present[bridge] < nic.mtu:
                raise MigrationError(
                    f"{guest.name}: bridge '{bridge}' on {target.name} has MTU {present[bridge]} < {nic.mtu}"
                )
        notes.append(f"bridges {', '.join(sorted({moved.get(n.source, n.source) for n in wanted}))} present on target")
    if not moved:
        return MigrationTuning({}, (), tuple(notes))
    with hosts.use(source) as hv:
        live = hv.domain_xml(guest.name)
        persistent = hv.domain_xml(guest.name, inactive=True)
    params: dict[str, object] = {
        "destination_xml": with_bridges(live, moved),
        "persistent_xml": with_bridges(persistent, moved),
    }
    notes.append("interfaces " + ", ".join(f"{old} -> {new}" for old, new in sorted(moved.items())))
    return MigrationTuning(params, (), tuple(notes))
