"""Storage for live migration: shared disks stay put, local disks travel.

A disk on storage the inventory declares shared needs no copy, but libvirt only trusts
cluster file systems and network disks; for a shared directory it refuses with "Unsafe
migration" unless told the storage really is shared (VIR_MIGRATE_UNSAFE) — which evac
says only for paths under the inventory's ``shared_storage``. Local disks are copied by
QEMU's NBD storage migration (NON_SHARED_DISK with ``migrate_disks``), which needs a
storage pool at the disk's path on the target; its pools are refreshed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evac import hookimpl
from evac.convergence import MigrationTuning
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec
from evac.model import Guest


@hookimpl
def evac_migration_tuning(
    guest: Guest, source: HostSpec, target: HostSpec, options: Mapping[str, Any]
) -> MigrationTuning | None:
    writable = [d for d in guest.disks if not d.readonly]
    local = [d for d in writable if not d.shared]
    on_shared_dir = [d for d in writable if d.shared and d.kind in ("file", "block")]
    params: dict[str, object] = {}
    flags: list[str] = []
    notes: list[str] = []
    if local:
        flags.append("NON_SHARED_DISK")
        params["migrate_disks"] = [d.target for d in local]
        notes.append(f"copies local disk(s) {', '.join(d.target for d in local)}")
        with Hypervisor.connect(target.name, target.uri) as hv:
            hv.refresh_pools()
    if on_shared_dir:
        flags.append("UNSAFE")
        notes.append("disks on declared shared storage")
    return MigrationTuning(params, tuple(flags), tuple(notes)) if flags else None
