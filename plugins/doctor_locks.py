"""Doctor check ``lock_manager``: a second QEMU on a disk another host runs is refused.

Fencing is the first guard against split brain, the lock manager the second: even a fence
that lies (a BMC that reports off for the wrong machine) cannot start a second writer when
libvirt's lock manager (``lockd`` or ``sanlock``) holds each disk's lease on storage every
host sees. The check reads ``qemu.conf`` and the lock driver's own file over SSH, then
proves it with a probe: a tiny guest on a shared probe disk runs on this host while the
next host tries to start the same disk, and must be refused. Both probe guests are
transient and destroyed, and the probe disk is removed, whatever happens.

Both probe guests are started running, not paused (their firmware finds nothing to boot
and idles), because libvirt acquires lock manager leases when a guest's CPUs start and
releases them when they pause: a paused guest holds, and asks for, only QEMU's own image
lock, so a paused probe could neither hold the lease nor be refused it. Where QEMU's image
lock reaches the other host (one kernel, as in the lab; NFS with working locks) it
refuses first, when QEMU opens the disk, before the lock manager is asked: the evidence
then says the lock manager was configured but not exercised by the probe.
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass

from evac.doctor import DoctorContext, Finding, Result
from evac.errors import EvacError
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec, Inventory
from evac.remote import run

_SETTING = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:"([^"]*)"|(-?\d+))', re.M)

# What refused the second writer, by libvirt's error text (most specific first).
REFUSALS = (
    ('Failed to get "write" lock', "QEMU's image lock"),
    ('Failed to get shared "write" lock', "QEMU's image lock"),
    ("Lockspace resource", "libvirt's lock manager (lockd)"),
    ("resource busy", "libvirt's lock manager (lockd)"),
    ("virtlockd", "libvirt's lock manager (lockd)"),
    ("sanlock", "libvirt's lock manager (sanlock)"),
    ("is locked", "libvirt's lock manager"),
)
PROBE_MEMORY_MIB = 32
PROBE_PREFIX = "evac-doctor-"  # the probe guests' names; other checks leave them out


def parse_conf(text: str) -> dict[str, str]:
    """The scalar settings of a libvirt config file (``key = "text"`` or ``key = 1``);
    comments and lists are ignored."""
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _SETTING.finditer(text)}


def read_conf(host: HostSpec, path: str) -> dict[str, str] | None:
    """A libvirt config file on the host, read over SSH; None when it does not exist."""
    assert host.ssh is not None
    quoted = shlex.quote(path)
    text = run(host.ssh, f"if [ -e {quoted} ]; then cat {quoted}; else echo __missing__; fi")
    return None if text.strip() == "__missing__" else parse_conf(text)


def refused_by(message: str) -> str | None:
    """Which layer refused a second start, from libvirt's error text; None when it is not a lock."""
    return next((layer for sign, layer in REFUSALS if sign in message), None)


def refusal_text(message: str, limit: int = 160) -> str:
    """The part of libvirt's error that says what refused (from the sign on), one line;
    the whole message, cut, when no sign is in it."""
    at = min((message.find(sign) for sign, _ in REFUSALS if sign in message), default=0)
    text = " ".join(message[at:].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class LockConfig:
    """What the host's configuration says about disk leases."""

    manager: str  # "", "lockd", "sanlock", or another name
    lockspace: str  # file_lockspace_dir (lockd) or disk_lease_dir (sanlock); "" when unset
    auto_leases: bool


def lock_config(qemu: dict[str, str], driver: dict[str, str] | None) -> LockConfig:
    manager = qemu.get("lock_manager", "")
    driver = driver or {}
    space_key = "disk_lease_dir" if manager == "sanlock" else "file_lockspace_dir"
    # lockd leases every disk unless told not to; sanlock only when told to
    auto_default = "1" if manager == "lockd" else "0"
    return LockConfig(manager, driver.get(space_key, ""), driver.get("auto_disk_leases", auto_default) != "0")


def judge_config(config: LockConfig, inventory: Inventory) -> Finding | None:
    """A failing finding when the configuration cannot refuse a second writer across hosts; None when it can."""
    fix_manager = (
        'set lock_manager = "lockd" in /etc/libvirt/qemu.conf and file_lockspace_dir in '
        "/etc/libvirt/qemu-lockd.conf to a directory on shared storage, then restart libvirtd"
    )
    if not config.manager:
        return Finding(
            Result.FAIL,
            "qemu.conf names no lock_manager: only QEMU's image locks guard a disk, and they do not reach "
            "across hosts on most shared storage",
            fix_manager,
        )
    if config.manager not in ("lockd", "sanlock"):
        return Finding(
            Result.FAIL, f"qemu.conf: lock_manager = {config.manager!r} is not lockd or sanlock", fix_manager
        )
    if not config.auto_leases:
        return Finding(
            Result.FAIL,
            f"{config.manager}: auto_disk_leases = 0: no disk gets a lease unless its XML asks for one",
            f"set auto_disk_leases = 1 in /etc/libvirt/qemu-{config.manager}.conf and restart libvirtd",
        )
    if config.lockspace and not inventory.is_shared(config.lockspace):
        shared = ", ".join(inventory.shared_storage) or "none declared"
        return Finding(
            Result.FAIL,
            f"{config.manager} keeps leases in {config.lockspace}, which is not on shared storage "
            f"(inventory shared_storage: {shared}): each host would see only its own leases",
            "move the lockspace under shared storage every host mounts at the same path, "
            "or declare it in hosts.yaml shared_storage if it is shared",
        )
    return None


def probe_xml(name: str, disk: str, virt: str) -> str:
    return f"""<domain type='{virt}'>
  <name>{name}</name>
  <memory unit='MiB'>{PROBE_MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>"""


def peer_of(inventory: Inventory, host: HostSpec) -> HostSpec | None:
    """The host that tries the second start: the next one in the inventory, wrapping around."""
    hosts = list(inventory.hosts)
    index = next(i for i, h in enumerate(hosts) if h.name == host.name)
    others = hosts[index + 1 :] + hosts[:index]
    return others[0] if others else None


def start_probe(hv: Hypervisor, name: str, disk: str, virt: str | None) -> str:
    """Start a probe guest, running so that the lock manager is asked for its lease: as KVM
    where the host has it, else TCG (``virt`` once known); returns the type that started."""
    last: EvacError | None = None
    for kind in (virt,) if virt else ("kvm", "qemu"):
        try:
            hv.start_transient(probe_xml(name, disk, kind))
            return kind
        except EvacError as exc:
            if virt or "kvm" not in str(exc).lower():
                raise
            last = exc
    assert last is not None
    raise last


def probe(inventory: Inventory, host: HostSpec, peer: HostSpec) -> Finding:
    """Run a guest on ``host`` on a shared probe disk; ``peer`` must be refused the same disk."""
    assert host.ssh is not None
    tag = uuid.uuid4().hex[:8]
    disk = f"{inventory.shared_storage[0].rstrip('/')}/.evac-doctor-{host.name}-{tag}.img"
    first, second = f"{PROBE_PREFIX}{host.name}-{tag}", f"{PROBE_PREFIX}{host.name}-{tag}-peer"
    run(host.ssh, f"truncate -s 1M {shlex.quote(disk)}")
    try:
        with Hypervisor.connect(host.name, host.uri, keepalive=None) as hv:
            virt = start_probe(hv, first, disk, virt=None)
            try:
                with Hypervisor.connect(peer.name, peer.uri, keepalive=None) as other:
                    try:
                        start_probe(other, second, disk, virt=virt)
                    except EvacError as exc:
                        message = str(exc)
                    else:
                        other.destroy(second)
                        return Finding(
                            Result.FAIL,
                            f"probe: {peer.name} STARTED a second QEMU on {disk} while {host.name} ran it: "
                            "nothing refuses a second writer across these hosts",
                            "make the lock manager's lockspace shared by both hosts (and check QEMU's "
                            "image locking is not disabled), then run evac doctor again",
                        )
            finally:
                hv.destroy(first)
    finally:
        run(host.ssh, f"rm -f {shlex.quote(disk)}")
    layer = refused_by(message)
    quoted = refusal_text(message)
    if layer is None:
        return Finding(
            Result.FAIL,
            f"probe: {peer.name} could not start the probe disk, but not for a lock: {quoted}",
            "fix the probe's start on that host (see the error) so the refusal can be observed",
        )
    if layer == "QEMU's image lock":
        note = (
            "QEMU's image lock answered before the lock manager was asked, so the probe does not prove "
            "the lock manager alone (its configuration is checked above)"
        )
    else:
        note = "the lock manager itself refused the second writer"
    return Finding(
        Result.PASS,
        f"probe: {host.name} ran {disk}; {peer.name} was refused it by {layer} ({quoted!r}); {note}",
    )


def check_locks(ctx: DoctorContext, host: HostSpec) -> Finding:
    inventory = ctx.app.inventory
    if host.ssh is None:
        return Finding(
            Result.FAIL,
            "no ssh settings: qemu.conf cannot be read and the probe cannot create its disk",
            f"add ssh: to host {host.name} in {inventory.source}",
        )
    qemu = read_conf(host, "/etc/libvirt/qemu.conf") or {}
    config = lock_config(qemu, read_conf(host, f"/etc/libvirt/qemu-{qemu.get('lock_manager', 'lockd')}.conf"))
    bad = judge_config(config, inventory)
    if bad is not None:
        return bad
    where = f"leases in {config.lockspace} (shared)" if config.lockspace else "leases on the disk files themselves"
    said = f"qemu.conf: lock_manager = {config.manager}, auto_disk_leases on, {where}"
    peer = peer_of(inventory, host)
    if peer is None:
        return Finding(Result.WARN, f"{said}; probe not run: the inventory has one host", "")
    if not inventory.shared_storage:
        return Finding(
            Result.WARN,
            f"{said}; probe not run: the inventory declares no shared_storage for its disk",
            "declare shared_storage in hosts.yaml",
        )
    found = probe(inventory, host, peer)
    return Finding(found.result, f"{said}; {found.evidence}", found.fix)
