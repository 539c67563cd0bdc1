"""Network preflight: a guest only moves to a host that has every bridge it plugs into.

Bridges are read over SSH (``ip -o link show type bridge``) because libvirt's interface
driver reads ``/sys/class/net``, which is not a namespaced or containerised host's own
view. A host without SSH settings is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evac import hookimpl
from evac.convergence import MigrationTuning
from evac.errors import EvacError, MigrationError
from evac.inventory import HostSpec
from evac.model import Guest
from evac.remote import bridges


@hookimpl
def evac_migration_tuning(
    guest: Guest, source: HostSpec, target: HostSpec, options: Mapping[str, Any]
) -> MigrationTuning | None:
    wanted = [nic for nic in guest.interfaces if nic.kind == "bridge"]
    if not wanted or target.ssh is None:
        return None
    try:
        present = bridges(target.ssh)
    except EvacError as exc:
        raise MigrationError(f"{guest.name}: cannot check bridges on {target.name}: {exc}") from None
    for nic in wanted:
        if nic.source not in present:
            raise MigrationError(f"{guest.name}: {target.name} has no bridge '{nic.source}'")
        if nic.mtu and present[nic.source] < nic.mtu:
            raise MigrationError(
                f"{guest.name}: bridge '{nic.source}' on {target.name} has MTU {present[nic.source]} < {nic.mtu}"
            )
    return MigrationTuning({}, (), (f"bridges {', '.join(sorted({n.source for n in wanted}))} present on target",))
