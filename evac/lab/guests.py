"""Tiny real Linux guests for the lab: Debian's kernel plus a busybox initramfs.

A guest prints ``LAB-READY name=...`` on its serial console once booted and a
heartbeat every second after, keeps a boot counter on its disk (the same disk after a
failover shows ``boots=2``), and can rewrite memory continuously to stress migration.
Consoles are files on the shared directory, so a guest's log follows it across hosts.
A guest with a NIC is on the lab's guest segment (:mod:`evac.lab.fabric`) at an address
derived from its name, announces itself with a gratuitous ARP at boot, and answers ping.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import time
import xml.sax.saxutils as su
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..domainxml import EVAC_NS
from .fabric import MTU, guest_mac
from .layout import LabError
from .processes import run
from .rig import Lab

MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
)
MIN_MEMORY_MIB = 96  # smaller guests die in the kernel decompressor


@dataclass(frozen=True)
class GuestSpec:
    name: str
    memory_mib: int = 128
    vcpus: int = 1
    dirty_mb: int = 0
    dirty_pause_ms: int = 0
    dirty_src: str = "urandom"
    priority: int = 0
    anti_affinity: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # guests a failover restarts before this one (metadata ``after=``)
    local_disk: bool = False
    bridge: str | None = "br0"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name):
            raise LabError(f"guest name: invalid {self.name!r}")
        if self.memory_mib < MIN_MEMORY_MIB:
            raise LabError(f"guest memory: at least {MIN_MEMORY_MIB} MiB boots, got {self.memory_mib}")


def virt_type() -> str:
    """``kvm`` only where it can boot Linux guests, else TCG (``qemu``).

    ``/dev/kvm`` can exist without hardware virtualisation behind it (a paravirtual
    KVM that starts VMs but never gets a Linux kernel past its decompressor), so the
    CPU must also show vmx or svm. ``EVAC_LAB_VIRT`` overrides.
    """
    forced = os.environ.get("EVAC_LAB_VIRT")
    if forced in ("kvm", "qemu"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "qemu"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "qemu"
    return "kvm" if re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) else "qemu"


def asset_dir(lab: Lab) -> Path:
    return lab.shared / "guest"


def build_assets(lab: Lab) -> Path:
    """Kernel and initramfs on shared storage; rebuilt only when the init script changes."""
    out = asset_dir(lab)
    init = resources.files("evac.lab").joinpath("guest-init").read_bytes()
    stamp = hashlib.sha256(init + " ".join(MODULES).encode()).hexdigest()
    if (out / "stamp").exists() and (out / "stamp").read_text() == stamp and (out / "initrd.gz").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    work = lab.root / "cache" / "kernel"
    work.mkdir(parents=True, exist_ok=True)
    deb = _kernel_deb(work)
    tree = work / "tree"
    if not any(tree.glob("boot/vmlinuz-*")) or not all(_module(tree, m) for m in MODULES):
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        _extract(deb, tree)
    shutil.copy(next(tree.glob("boot/vmlinuz-*")), out / "vmlinuz")
    root = work / "initramfs"
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("bin", "proc", "sys", "dev", "lib/modules", "d"):
        (root / sub).mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "init").write_bytes(init)
    (root / "init").chmod(0o755)
    for module in MODULES:
        found = _module(tree, module)
        if found is None:
            raise LabError(f"guest kernel: module {module}.ko not found in {deb.name}")
        shutil.copy(found, root / "lib" / "modules")
    cpio = subprocess.run(
        f"cd {root} && find . | {busybox} cpio -o -H newc 2>/dev/null | gzip -1 > {out / 'initrd.gz'}",
        shell=True,
        capture_output=True,
        text=True,
    )
    if cpio.returncode != 0:
        raise LabError(f"guest initramfs: {cpio.stderr.strip()}")
    (out / "stamp").write_text(stamp)
    return out


def _module(tree: Path, name: str) -> Path | None:
    return next(iter(tree.glob(f"lib/modules/*/kernel/**/{name}.ko")), None)


def _kernel_deb(work: Path) -> Path:
    debs = sorted(work.glob("linux-image-*.deb"))
    if debs:
        return debs[-1]
    depends = run("apt-cache", "depends", "linux-image-amd64").stdout
    match = re.search(r"Depends: (linux-image-\d\S+)", depends)
    if not match:
        raise LabError("guest kernel: apt-cache knows no linux-image-amd64 (run apt-get update)")
    proc = subprocess.run(["apt-get", "download", match.group(1)], cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"guest kernel: apt-get download {match.group(1)}: {proc.stderr.strip()}")
    return sorted(work.glob("linux-image-*.deb"))[-1]


def _extract(deb: Path, tree: Path) -> None:
    """Only the kernel and the few virtio modules: extracting the whole package is slow."""
    fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert fsys.stdout is not None
    with tarfile.open(fileobj=fsys.stdout, mode="r|") as tar:
        for member in tar:
            name = member.name
            wanted = name.startswith("./boot/vmlinuz-") or (
                "/kernel/" in name and os.path.basename(name)[:-3] in MODULES and name.endswith(".ko")
            )
            if wanted and member.isfile():
                tar.extract(member, tree, filter="data")
    fsys.wait()


def console_path(lab: Lab, name: str) -> Path:
    return lab.shared / "console" / f"{name}.log"


def disk_path(lab: Lab, host: str, spec: GuestSpec) -> tuple[Path, str]:
    """(path seen from the root namespace, path seen inside the host)."""
    if spec.local_disk:
        return lab.host_dir(
            host
        ) / "lib" / "images" / f"{spec.name}.qcow2", f"/var/lib/libvirt/images/{spec.name}.qcow2"
    path = lab.shared / "disks" / f"{spec.name}.img"
    return path, str(path)


def domain_xml(lab: Lab, spec: GuestSpec, disk: str) -> str:
    assets = asset_dir(lab)
    cmdline = f"console=ttyS0 quiet panic=-1 lab.name={spec.name}"
    address = ""
    if spec.bridge:
        address = lab.guest_address(spec.name)
        cmdline += f" lab.ip={address}/24 lab.gw={lab.client_address} lab.mtu={MTU}"
    if spec.dirty_mb:
        cmdline += (
            f" lab.dirty_mb={spec.dirty_mb} lab.dirty_src={spec.dirty_src} lab.dirty_pause_ms={spec.dirty_pause_ms}"
        )
    fmt = "qcow2" if spec.local_disk else "raw"
    located = f' address="{address}"' if address else ""
    located += f' after="{su.escape(",".join(spec.after))}"' if spec.after else ""
    groups = "".join(f'<evac:anti-affinity group="{su.escape(g)}"/>' for g in spec.anti_affinity)
    nic = (
        f"<interface type='bridge'><mac address='{guest_mac(spec.name)}'/><source bridge='{spec.bridge}'/>"
        "<model type='virtio'/></interface>"
        if spec.bridge
        else ""
    )
    return f"""<domain type='{virt_type()}'>
  <name>{spec.name}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <metadata><evac:guest xmlns:evac="{EVAC_NS}" priority="{spec.priority}"{located}>{groups}</evac:guest></metadata>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{assets}/vmlinuz</kernel><initrd>{assets}/initrd.gz</initrd>
    <cmdline>{su.escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}' cache='none' io='native'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {nic}
    <serial type='file'><source path='{console_path(lab, spec.name)}' append='on'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def create_guest(lab: Lab, host: str, spec: GuestSpec) -> int:
    """Define and start a guest on ``host``; returns the console offset to wait from."""
    from ..hypervisor import Hypervisor

    h = lab.host(host)
    build_assets(lab)
    root_path, inner_path = disk_path(lab, host, spec)
    if spec.local_disk:
        run("qemu-img", "create", "-q", "-f", "qcow2", str(root_path), "64M")
    else:  # a new guest gets a new disk: its boot counter starts at 1
        root_path.unlink(missing_ok=True)
        with open(root_path, "wb") as f:
            f.truncate(1024 * 1024)
    console = console_path(lab, spec.name)
    offset = console.stat().st_size if console.exists() else 0
    with Hypervisor.connect(host, h.uri) as hv:
        hv.define(domain_xml(lab, spec, inner_path))
        hv.start(spec.name)
    return offset


def qemu_pids(name: str) -> list[int]:
    """The QEMU processes running guest ``name`` anywhere on the machine (every lab host
    shares its process table): outside evidence for tests and benches."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"/usr/bin/qemu-system") and f"guest={name},".encode() in cmdline:
            found.append(int(pid))
    return found


def wait_console(lab: Lab, name: str, pattern: str = "LAB-READY", after: int = 0, timeout: float = 120) -> str:
    """The first console line containing ``pattern`` written after byte ``after``."""
    path = console_path(lab, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(after)
                for line in f.read().decode(errors="replace").splitlines():
                    if pattern in line:
                        return line
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise LabError(f"guest {name}: '{pattern}' not on its console within {timeout:.0f} s ({path})")


def last_heartbeat(lab: Lab, name: str) -> int:
    """The number of the newest ``HB n`` line, or 0."""
    try:
        text = console_path(lab, name).read_text(errors="replace")
    except FileNotFoundError:
        return 0
    beats = re.findall(r"^HB (\d+) ", text, re.M)
    return int(beats[-1]) if beats else 0


def default_guest_names(host: str, count: int) -> list[str]:
    return [f"{host}-vm{i}" for i in range(1, count + 1)]
