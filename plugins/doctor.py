"""The built-in ``evac doctor`` checks, registered like any plugin's (``evac_doctor_checks``).

Safety checks (a failure makes automatic fencing unsafe): ``lock_manager``
(``doctor_locks``), ``fencing`` (``doctor_fencing``) and ``autostart`` (here). The others
say whether a failover or drain would work: ``watchdog``, ``clock``, ``guest_disks``,
``networks``, ``migration_tls``, ``migration_ports``, ``versions``. What each proves and
does not prove: ``docs/doctor.md``.
"""

from __future__ import annotations

from evac import hookimpl
from evac.doctor import DoctorCheck, DoctorContext, Finding, Result
from evac.errors import EvacError
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec
from evac.networks import bridge_on
from evac.remote import bridges

from .doctor_fencing import check_fencing
from .doctor_host import check_clock, check_migration_ports, check_migration_tls, check_versions
from .doctor_locks import PROBE_PREFIX, check_locks


def check_autostart(ctx: DoctorContext, host: HostSpec) -> Finding:
    """A guest set to autostart comes back with its host: after a fence and a restart
    elsewhere, a host powered on again would run it twice."""
    with Hypervisor.connect(host.name, host.uri, keepalive=None) as hv:
        guests = [g for g in hv.guests() if g.persistent and not g.name.startswith(PROBE_PREFIX)]
        flagged = [g.name for g in guests if hv.autostart(g.name)]
    if flagged:
        return Finding(
            Result.FAIL,
            f"autostart on: {', '.join(flagged)}: after a failover, this host coming back would start "
            "them a second time",
            "; ".join(f"virsh -c {host.uri} autostart --disable {name}" for name in flagged),
        )
    return Finding(Result.PASS, f"none of {len(guests)} defined guests autostarts")


def check_guest_disks(ctx: DoctorContext, host: HostSpec) -> Finding:
    inventory = ctx.app.inventory
    with Hypervisor.connect(host.name, host.uri, keepalive=None) as hv:
        guests = [g for g in hv.guests(inventory.is_shared) if not g.name.startswith(PROBE_PREFIX)]
    local = [f"{g.name} ({', '.join(f'{d.target} {d.path}' for d in g.local_disks)})" for g in guests if g.local_disks]
    if local:
        return Finding(
            Result.WARN,
            f"local disks: {'; '.join(local)}: these guests are drained with their storage, but are not "
            "restarted elsewhere when the host fails",
            "move their disks to shared storage (hosts.yaml shared_storage), or accept they stay down with the host",
        )
    return Finding(Result.PASS, f"every disk of {len(guests)} guests is on shared storage")


def check_networks(ctx: DoctorContext, host: HostSpec) -> Finding:
    """N+1: every bridge a guest here plugs into exists (under the inventory's name for its
    network) on at least one other host, read there over SSH."""
    inventory = ctx.app.inventory
    with Hypervisor.connect(host.name, host.uri, keepalive=None) as hv:
        guests = [g for g in hv.guests(inventory.is_shared) if not g.name.startswith(PROBE_PREFIX)]
    used: dict[str, list[str]] = {}
    for guest in guests:
        for nic in guest.interfaces:
            if nic.kind == "bridge":
                used.setdefault(nic.source, []).append(guest.name)
    if not used:
        return Finding(Result.PASS, f"no guest of {len(guests)} plugs into a bridge")
    others = [h for h in inventory.hosts if h.name != host.name]
    present: dict[str, dict[str, int]] = {}
    unread: list[str] = []
    for other in others:
        if other.ssh is None:
            unread.append(f"{other.name} (no ssh)")
            continue
        try:
            present[other.name] = bridges(other.ssh)
        except EvacError as exc:
            unread.append(f"{other.name} ({exc})")
    short: list[str] = []
    seen: list[str] = []
    for bridge, names in sorted(used.items()):
        where = [
            o.name
            for o in others
            if o.name in present and bridge_on(o.networks, host.networks, bridge) in present[o.name]
        ]
        if where:
            seen.append(f"{bridge} on {', '.join(where)}")
        else:
            short.append(f"{bridge} (used by {', '.join(names)}) on no other host")
    not_read = f"; not read: {', '.join(unread)}" if unread else ""
    if short:
        return Finding(
            Result.FAIL,
            f"{'; '.join(short)}{not_read}: those guests have nowhere to go",
            "create the bridge on another host, or map the network to its bridge there (hosts.yaml networks:)",
        )
    return Finding(Result.PASS, f"{'; '.join(seen)}{not_read}")


def check_watchdog(ctx: DoctorContext, host: HostSpec) -> Finding:
    """A host agent with a watchdog ``device`` would self-fence a partitioned host; evac has
    no host agent yet, so there is nothing to check (and nothing is assumed)."""
    return Finding(Result.SKIP, "not applicable: no agent configured")


@hookimpl
def evac_doctor_checks() -> list[DoctorCheck]:
    return [
        DoctorCheck(
            "lock_manager",
            check_locks,
            "qemu.conf names lockd or sanlock with a shared lockspace; a probe guest on a shared disk "
            "runs here and the next host must be refused it (both probe guests and the disk are removed)",
            safety=True,
            timeout=90,
        ),
        DoctorCheck(
            "fencing",
            check_fencing,
            "each fence method answers a power status query; --power-cycle-test powers a host in maintenance off",
            safety=True,
            timeout=120,
        ),
        DoctorCheck("autostart", check_autostart, "no guest is set to autostart on its host", safety=True),
        DoctorCheck("watchdog", check_watchdog, "the host agent's watchdog (not built yet)"),
        DoctorCheck("clock", check_clock, "the host's clock agrees with the controller's; chrony/timesyncd status"),
        DoctorCheck("guest_disks", check_guest_disks, "guests' disks are on shared storage"),
        DoctorCheck("networks", check_networks, "every bridge a guest uses exists on another host (N+1)"),
        DoctorCheck("migration_tls", check_migration_tls, "QEMU's migration TLS files are present"),
        DoctorCheck("migration_ports", check_migration_ports, "libvirtd's ports answer; QEMU's migration range"),
        DoctorCheck("versions", check_versions, "libvirt and QEMU versions against known migration issues"),
    ]
