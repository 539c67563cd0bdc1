"""Hosts of the lab: namespaces, daemons, power and network faults.

Host ``hostN`` is the network namespace ``<prefix>-hostN`` (address ``<net>.N``, a veth
into the bridge ``<prefix>br0`` at ``<net>.254`` in the root namespace), plus a mount
namespace with private libvirt directories and a UTS namespace for its hostname. The
namespaces are pinned to files, so a host's processes can be killed ("power off") and
started again in the same host. Processes are found by mount-namespace inode, never by
name, so ``down`` and ``kill-host`` touch nothing that is not the lab's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import EvacError
from .pki import ensure_ca, issue_libvirt_client, issue_libvirt_server, issue_qemu_credentials

DEFAULT_DIR = Path(os.environ.get("EVAC_LAB_DIR", "/tmp/evac-lab"))
LIBVIRTD = "/usr/sbin/libvirtd"
VIRTLOCKD = "/usr/sbin/virtlockd"
SSHD = "/usr/sbin/sshd"
LIBVIRT_PORT = 16509
LIBVIRT_TLS_PORT = 16514


class LabError(EvacError):
    """The lab could not be brought into the requested state."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass(frozen=True)
class LabHost:
    name: str
    index: int
    address: str
    netns: str
    veth: str

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"


class Lab:
    """One lab instance. Several can coexist with different ``root``/``prefix``/``net``."""

    def __init__(self, root: Path | str = DEFAULT_DIR, prefix: str = "evac", net: str = "198.18.0") -> None:
        self.root = Path(root)
        self.prefix = prefix
        self.net = net
        self.bridge = f"{prefix}br0"
        self.bridge_ip = f"{net}.254"
        self.state_file = self.root / "lab.json"
        self.inventory_file = self.root / "hosts.yaml"
        self.shared = self.root / "shared"
        self.ns_dir = self.root / "ns"
        self.ssh_dir = self.root / "ssh"
        self.lockspace = self.shared / "lockspace"
        self.client_pki_dir = self.root / "pki" / "client"

    @classmethod
    def open(cls, root: Path | str = DEFAULT_DIR) -> Lab:
        """The lab at ``root`` with the prefix and network it was created with."""
        state = Path(root) / "lab.json"
        if not state.exists():
            return cls(root)
        data = json.loads(state.read_text())
        return cls(root, prefix=data.get("prefix", "evac"), net=data.get("net", "198.18.0"))

    # ---------------------------------------------------------------- layout
    def host_names(self) -> list[str]:
        if not self.state_file.exists():
            return []
        return list(json.loads(self.state_file.read_text())["hosts"])

    def host(self, name: str) -> LabHost:
        names = self.host_names()
        if name not in names:
            raise LabError(
                f"unknown lab host '{name}'; the lab has: {', '.join(names) or 'no hosts (run evac lab up)'}"
            )
        index = int(name.removeprefix("host"))
        return LabHost(
            name=name,
            index=index,
            address=f"{self.net}.{index}",
            netns=f"{self.prefix}-{name}",
            veth=f"{self.prefix}h{index}",
        )

    def hosts(self) -> list[LabHost]:
        return [self.host(n) for n in self.host_names()]

    def host_dir(self, name: str) -> Path:
        return self.root / "hosts" / name

    def tls_uri(self, name: str) -> str:
        """The host's libvirtd over TLS, with the lab's client certificate (evac's, and the
        hosts' own for peer-to-peer migration: ``/tmp`` is not private to a host)."""
        return f"qemu+tls://{self.host(name).address}/system?pkipath={self.client_pki_dir}"

    def ssh_uri(self, name: str) -> str:
        """The host's libvirtd through its sshd (libssh2, the lab key and known_hosts; the
        OpenSSH client would write to ``~/.ssh``)."""
        return (
            f"qemu+libssh2://root@{self.host(name).address}/system?keyfile={self.ssh_dir / 'id_ed25519'}"
            f"&known_hosts={self.ssh_dir / 'known_hosts'}&sshauth=privkey"
        )

    def qemu_pki_dir(self, name: str) -> Path:
        """QEMU's migration TLS credentials of a host (``/etc/libvirt/pki-qemu`` inside it)."""
        return self.host_dir(name) / "etc" / "pki-qemu"

    def _mnt(self, name: str) -> Path:
        return self.ns_dir / f"{name}.mnt"

    def _uts(self, name: str) -> Path:
        return self.ns_dir / f"{name}.uts"

    def nsenter(self, name: str) -> list[str]:
        h = self.host(name)
        return [
            "nsenter",
            f"--net=/run/netns/{h.netns}",
            f"--mount={self._mnt(name)}",
            f"--uts={self._uts(name)}",
            "--",
        ]

    def exec(self, name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside host ``name`` (all three namespaces)."""
        return run(*self.nsenter(name), *argv, check=check)

    # ---------------------------------------------------------------- processes
    def _mnt_inode(self, name: str) -> int | None:
        """The inode of the host's mount namespace: from its pinned file, else as recorded.

        The record lets ``down`` find a host's processes even when the pin is gone.
        """
        if _mounted(self._mnt(name)):
            return os.stat(self._mnt(name)).st_ino
        record = self.host_dir(name) / "mntns"
        return int(record.read_text()) if record.exists() else None

    def pids(self, name: str) -> list[int]:
        """Every process living in the host's mount namespace."""
        inode = self._mnt_inode(name)
        if inode is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/mnt").st_ino == inode:
                    found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        return found

    @staticmethod
    def _is_reaper(pid: int) -> bool:
        try:
            return b"evac.lab.reaper" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    @staticmethod
    def _alive(pid: int) -> bool:
        """Until every thread has exited: a zombie leader's other threads may still hold
        the process's files (a listening socket answers until the last one is gone)."""
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return False
        for tid in tasks:
            try:
                state = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                return True
        return False

    def _kill(self, pids: list[int], grace: float = 5.0) -> None:
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(self._alive(p) for p in pids):
                return
            time.sleep(0.05)
        _signal(pids, signal.SIGKILL)

    # ---------------------------------------------------------------- lifecycle
    def up(self, hosts: int = 3) -> float:
        """Create or repair the hosts; returns the seconds it took.

        Re-running ``up`` keeps what is healthy (guests included) and repairs the rest;
        a different host count rebuilds the lab.
        """
        started = time.monotonic()
        if not 1 <= hosts <= 200:
            raise LabError(f"--hosts: expected 1 to 200, got {hosts}")
        _require_root()
        wanted = [f"host{i}" for i in range(1, hosts + 1)]
        if self.host_names() and self.host_names() != wanted:
            self.down()
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"hosts": wanted, "prefix": self.prefix, "net": self.net}))
        for sub in ("disks", "console", "lockspace"):
            (self.shared / sub).mkdir(parents=True, exist_ok=True)
        self._ensure_ns_dir()
        self._ensure_ssh_keys()
        self._write_etc_hosts()
        self._ensure_bridge()
        ca = ensure_ca(self.root / "pki")
        issue_libvirt_client(ca, self.client_pki_dir)
        for h in self.hosts():
            self._ensure_host(h)
            issue_qemu_credentials(ca, self.qemu_pki_dir(h.name), h.name, h.address)
            issue_libvirt_server(ca, self.host_dir(h.name) / "etc" / "pki-libvirt", h.name, h.address)
        self._seed_capabilities()
        for h in self.hosts():
            if not self.libvirtd_ready(h.name):
                self._start_daemons(h)
        for h in self.hosts():
            self._wait_libvirtd(h)
            if not _port_open(h.address, 22):
                self._start_sshd(h)
        for h in self.hosts():
            self._wait_port(h, 22, "sshd")
            self._ensure_pool(h)
        self._save_capabilities()
        self._write_inventory()
        return time.monotonic() - started

    def down(self) -> None:
        """Remove every trace of the lab but caches: processes, namespaces, links, mounts."""
        names = self.host_names() or self._hosts_on_disk()
        pids = [p for n in names for p in self.pids(n)]
        self._kill(pids)
        for name in names:
            netns = f"{self.prefix}-{name}"
            for pinned in (self._mnt(name), self._uts(name)):
                _unmount_all(pinned)
            if Path(f"/run/netns/{netns}").exists():
                run("ip", "netns", "del", netns, check=False)
            veth = f"{self.prefix}h{name.removeprefix('host')}"
            if _link_exists(veth):
                run("ip", "link", "del", veth, check=False)
        if _link_exists(self.bridge):
            run("ip", "link", "del", self.bridge, check=False)
        _unmount_all(self.ns_dir)
        self._remove_marked_run_dirs()
        for path in (self.root / "hosts", self.ns_dir, *(self.shared / d for d in ("disks", "console", "lockspace"))):
            shutil.rmtree(path, ignore_errors=True)
        journal = self.root / "journal.db"
        for path in (
            self.state_file,
            self.inventory_file,
            self.root / "etc-hosts",
            journal,
            journal.with_suffix(".db-wal"),
            journal.with_suffix(".db-shm"),
        ):
            path.unlink(missing_ok=True)

    def _hosts_on_disk(self) -> list[str]:
        hosts_dir = self.root / "hosts"
        return sorted(p.name for p in hosts_dir.iterdir()) if hosts_dir.exists() else []

    # ---------------------------------------------------------------- faults
    def power_state(self, name: str) -> str:
        """The out-of-band view: ``on`` while the host's libvirtd process exists."""
        self.host(name)
        return "on" if any(self._daemon(p) == "libvirtd" for p in self.pids(name)) else "off"

    def kill_host(self, name: str) -> None:
        """Power off: SIGKILL every process of the host at once (reapers exit by themselves)."""
        self.host(name)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            # listed again each round: a child forked while its parent was dying is killed too
            victims = [p for p in self.pids(name) if not self._is_reaper(p) and self._alive(p)]
            if not victims:
                break
            _signal(victims, signal.SIGKILL)
            time.sleep(0.02)
        (self.host_dir(name) / "run" / "libvirtd.pid").unlink(missing_ok=True)

    def start_host(self, name: str) -> None:
        """Power on after ``kill_host``: libvirtd and sshd start again in the same host."""
        h = self.host(name)
        if not self.libvirtd_ready(name):
            self._start_daemons(h)
        self._wait_libvirtd(h)
        if not _port_open(h.address, 22):
            self._start_sshd(h)
        self._wait_port(h, 22, "sshd")
        self._ensure_pool(h)

    def cut(self, name: str) -> None:
        """Network partition: the host keeps running but nobody can reach it."""
        run("ip", "link", "set", self.host(name).veth, "down")

    def heal(self, name: str) -> None:
        run("ip", "link", "set", self.host(name).veth, "up")

    def set_loss(self, name: str, percent: int) -> str:
        """Drop ``percent`` % of the host's packets each way (0 clears); returns the means used.

        ``tc netem`` where the kernel has it, else nftables' random ``numgen`` in the
        host's namespace (some kernels are built without netem).
        """
        h = self.host(name)
        if not 0 <= percent <= 100:
            raise LabError(f"loss: expected 0 to 100 %, got {percent}")
        run("tc", "qdisc", "del", "dev", h.veth, "root", check=False)
        run("ip", "netns", "exec", h.netns, "nft", "delete", "table", "inet", "evac_loss", check=False)
        if percent == 0:
            return "none"
        if (
            run("tc", "qdisc", "add", "dev", h.veth, "root", "netem", "loss", f"{percent}%", check=False).returncode
            == 0
        ):
            return "netem"
        rules = (
            "table inet evac_loss {\n"
            f"  chain input {{ type filter hook input priority -300; numgen random mod 100 < {percent} drop; }}\n"
            f"  chain output {{ type filter hook output priority -300; numgen random mod 100 < {percent} drop; }}\n"
            "}\n"
        )
        proc = subprocess.run(
            ["ip", "netns", "exec", h.netns, "nft", "-f", "-"], input=rules, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise LabError(f"loss on {name}: neither tc netem nor nftables works here: {proc.stderr.strip()}")
        return "nftables"

    def is_cut(self, name: str) -> bool:
        out = run("ip", "-o", "link", "show", self.host(name).veth, check=False).stdout
        return "state DOWN" in out or ",UP" not in out

    # ---------------------------------------------------------------- status
    def libvirtd_ready(self, name: str) -> bool:
        return any(self._daemon(p) == "libvirtd" for p in self.pids(name)) and _port_open(
            self.host(name).address, LIBVIRT_PORT
        )

    @staticmethod
    def _daemon(pid: int) -> str:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            return ""
        return os.path.basename(argv0.decode(errors="replace"))

    def status(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for h in self.hosts():
            pids = self.pids(h.name)
            rows.append(
                {
                    "host": h.name,
                    "address": h.address,
                    "uri": h.uri,
                    "power": self.power_state(h.name),
                    "network": "cut" if self.is_cut(h.name) else "ok",
                    "libvirtd": self.libvirtd_ready(h.name),
                    "processes": len(pids),
                }
            )
        return rows

    # ---------------------------------------------------------------- setup pieces
    def _ensure_ns_dir(self) -> None:
        self.ns_dir.mkdir(parents=True, exist_ok=True)
        if not _mounted(self.ns_dir):
            run("mount", "--bind", str(self.ns_dir), str(self.ns_dir))
            run("mount", "--make-private", str(self.ns_dir))

    def _ensure_ssh_keys(self) -> None:
        self.ssh_dir.mkdir(parents=True, exist_ok=True)
        for key in ("hostkey", "id_ed25519"):
            if not (self.ssh_dir / key).exists():
                run(
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"evac-lab-{key}",
                    "-f",
                    str(self.ssh_dir / key),
                )
        shutil.copy(self.ssh_dir / "id_ed25519.pub", self.ssh_dir / "authorized_keys")
        hostkey = (self.ssh_dir / "hostkey.pub").read_text().split()
        lines = [f"{h.address} {hostkey[0]} {hostkey[1]}" for h in self.hosts()]
        (self.ssh_dir / "known_hosts").write_text("\n".join(lines) + "\n")

    def _write_etc_hosts(self) -> None:
        lines = ["127.0.0.1 localhost"] + [f"{h.address} {h.name}" for h in self.hosts()]
        (self.root / "etc-hosts").write_text("\n".join(lines) + "\n")

    def _ensure_bridge(self) -> None:
        if not Path("/run/netns").exists():
            (self.root / ".created_run_netns").touch()
        if not _link_exists(self.bridge):
            run("ip", "link", "add", self.bridge, "type", "bridge")
            run("ip", "link", "set", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            run("ip", "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
            run("ip", "link", "set", self.bridge, "up")

    def _ensure_host(self, h: LabHost) -> None:
        d = self.host_dir(h.name)
        for sub in ("etc", "run", "lib/images", "lib/qemu", "lib/boot", "log/qemu", "cache/qemu"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self._write_configs(h)
        marker = self.host_dir(h.name) / "netns"
        if Path(f"/run/netns/{h.netns}").exists() and not marker.exists():
            raise LabError(
                f"network namespace {h.netns} exists but is not this lab's ({self.root}): "
                "another lab uses the same prefix; give this one another prefix and network"
            )
        if not Path(f"/run/netns/{h.netns}").exists():
            run("ip", "netns", "add", h.netns)
            marker.write_text(h.netns)
            if _link_exists(h.veth):
                run("ip", "link", "del", h.veth)
            run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
            run("ip", "link", "set", h.veth, "master", self.bridge, "up")
            run("ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
            run("ip", "-n", h.netns, "link", "set", "lo", "up")
            run("ip", "-n", h.netns, "link", "set", "eth0", "up")
            # The bridge guests plug into; a host without it cannot take those guests.
            run("ip", "-n", h.netns, "link", "add", "br0", "type", "bridge")
            run("ip", "-n", h.netns, "link", "set", "br0", "up")
        if not _mounted(self._mnt(h.name)):
            self._mnt(h.name).touch()
            self._uts(h.name).touch()
            if not Path("/run/libvirt").exists():
                (self.root / ".created_run_libvirt").touch()
            script = " && ".join(
                [
                    f"hostname {h.name}",
                    "mkdir -p /run/libvirt",
                    f"mount --bind {d}/etc /etc/libvirt",
                    f"mount --bind {d}/run /run/libvirt",
                    f"mount --bind {d}/lib /var/lib/libvirt",
                    f"mount --bind {d}/log /var/log/libvirt",
                    f"mount --bind {d}/cache /var/cache/libvirt",
                    f"mount --bind {self.root}/etc-hosts /etc/hosts",
                ]
            )
            run(
                "unshare",
                f"--mount={self._mnt(h.name)}",
                f"--uts={self._uts(h.name)}",
                "--propagation",
                "private",
                "/bin/sh",
                "-e",
                "-c",
                script,
            )
            (self.host_dir(h.name) / "mntns").write_text(str(os.stat(self._mnt(h.name)).st_ino))

    def _write_configs(self, h: LabHost) -> None:
        etc = self.host_dir(h.name) / "etc"
        (etc / "libvirtd.conf").write_text(
            f"""listen_tls = 1
listen_tcp = 1
listen_addr = "{h.address}"
tcp_port = "{LIBVIRT_PORT}"
tls_port = "{LIBVIRT_TLS_PORT}"
key_file = "/etc/libvirt/pki-libvirt/serverkey.pem"
cert_file = "/etc/libvirt/pki-libvirt/servercert.pem"
ca_file = "/etc/libvirt/pki-libvirt/cacert.pem"
auth_tcp = "none"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "5e1f0000-0000-4000-8000-{h.index:012x}"
log_level = 3
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
keepalive_interval = 5
keepalive_count = 5
max_clients = 200
max_workers = 40
"""
        )
        # QEMU runs as root with no cgroups: cgroup paths would collide between hosts.
        (etc / "qemu.conf").write_text(
            f"""user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
migration_address = "{h.address}"
migration_host = "{h.address}"
lock_manager = "lockd"
migrate_tls_x509_cert_dir = "/etc/libvirt/pki-qemu"
migrate_tls_x509_verify = 1
"""
        )
        # Every disk gets a lease in the shared lockspace: a second QEMU on a disk that
        # one host still runs (a partitioned, unfenced host) fails to start.
        (etc / "qemu-lockd.conf").write_text(
            f"""auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "{self.lockspace}"
"""
        )
        (etc / "virtlockd.conf").write_text('log_outputs = "3:file:/var/log/libvirt/virtlockd.log"\n')
        (etc / "libvirt.conf").write_text("")
        (self.host_dir(h.name) / "sshd_config").write_text(
            f"""ListenAddress {h.address}
HostKey {self.ssh_dir}/hostkey
PidFile /run/libvirt/sshd.pid
AuthorizedKeysFile {self.ssh_dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""
        )

    def _spawn(self, h: LabHost, argv: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            subprocess.Popen(
                [*self.nsenter(h.name), sys.executable, "-m", "evac.lab.reaper", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": _package_parent()},
            )

    def _start_daemons(self, h: LabHost) -> None:
        run_dir = self.host_dir(h.name) / "run"
        out = self.host_dir(h.name) / "log" / "daemons.out"
        # A privileged libvirtd does not spawn virtlockd, and its QEMU driver fails without it.
        if not any(self._daemon(p) == "virtlockd" for p in self.pids(h.name)):
            for stale in ("virtlockd.pid", "virtlockd-sock", "virtlockd-admin-sock"):
                (run_dir / stale).unlink(missing_ok=True)
            self._spawn(h, [VIRTLOCKD, "-f", "/etc/libvirt/virtlockd.conf", "-p", "/run/libvirt/virtlockd.pid"], out)
            self._wait_for(lambda: (run_dir / "virtlockd-sock").exists(), f"virtlockd on {h.name}", "virtlockd.log", h)
        (run_dir / "libvirtd.pid").unlink(missing_ok=True)
        self._spawn(
            h,
            [LIBVIRTD, "-l", "-f", "/etc/libvirt/libvirtd.conf", "-p", "/run/libvirt/libvirtd.pid"],
            self.host_dir(h.name) / "log" / "daemons.out",
        )

    def _start_sshd(self, h: LabHost) -> None:
        if not Path(SSHD).exists():
            raise LabError("sshd is not installed (apt-get install openssh-server)")
        if not Path("/run/sshd").exists():
            Path("/run/sshd").mkdir(parents=True)
            (self.root / ".created_run_sshd").touch()
        d = self.host_dir(h.name)
        self._spawn(
            h, [SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(d / "log" / "sshd.log")], d / "log" / "daemons.out"
        )

    def _wait_libvirtd(self, h: LabHost, timeout: float = 60) -> None:
        self._wait_port(h, LIBVIRT_PORT, "libvirtd", timeout)

    def _wait_port(self, h: LabHost, port: int, what: str, timeout: float = 30) -> None:
        log = "libvirtd.log" if port == LIBVIRT_PORT else "sshd.log"
        self._wait_for(lambda: _port_open(h.address, port), f"{what} on {h.name}", log, h, timeout)

    def _wait_for(self, ready: Callable[[], bool], what: str, log: str, h: LabHost, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.05)
        path = self.host_dir(h.name) / "log" / log
        tail = path.read_text()[-800:] if path.exists() else "(no log)"
        raise LabError(f"{what} did not come up within {timeout:.0f} s; log tail:\n{tail}")

    def _ensure_pool(self, h: LabHost) -> None:
        """Storage migration of local disks needs a pool at the disk's path on the target."""
        from ..hypervisor import Hypervisor

        with Hypervisor.connect(h.name, h.uri) as hv:
            hv.ensure_dir_pool("default", "/var/lib/libvirt/images")

    def _seed_capabilities(self) -> None:
        """Probing QEMU's capabilities costs seconds per host; probe once, share the cache.

        libvirt re-validates a cached file and re-probes by itself when anything changed.
        """
        cache = self.root / "capscache"
        if not cache.exists():
            return
        for h in self.hosts():
            target = self.host_dir(h.name) / "cache" / "qemu" / "capabilities"
            target.mkdir(parents=True, exist_ok=True)
            for xml in cache.glob("*.xml"):
                if not (target / xml.name).exists():
                    shutil.copy2(xml, target / xml.name)

    def _save_capabilities(self) -> None:
        cache = self.root / "capscache"
        if cache.exists() and any(cache.glob("*.xml")):
            return
        hosts = self.hosts()
        run("virsh", "-q", "-c", hosts[0].uri, "capabilities")
        cache.mkdir(parents=True, exist_ok=True)
        for xml in (self.host_dir(hosts[0].name) / "cache" / "qemu" / "capabilities").glob("*.xml"):
            shutil.copy2(xml, cache / xml.name)

    def _remove_marked_run_dirs(self) -> None:
        for name, path in ((".created_run_libvirt", "/run/libvirt"), (".created_run_sshd", "/run/sshd")):
            if (self.root / name).exists():
                try:
                    os.rmdir(path)
                except OSError:
                    pass
                (self.root / name).unlink()
        marker = self.root / ".created_run_netns"
        if marker.exists() and Path("/run/netns").exists() and not os.listdir("/run/netns"):
            _unmount_all("/run/netns")
            try:
                os.rmdir("/run/netns")
            except OSError:
                pass
            marker.unlink()

    def _write_inventory(self) -> None:
        lines = [
            "# Written by `evac lab up`: the lab's hosts as an evac inventory.",
            "shared_storage:",
            f"  - {self.shared}",
            "hosts:",
        ]
        for h in self.hosts():
            lines += [
                f"  - name: {h.name}",
                f"    uri: {h.uri}",
                f"    address: {h.address}",
                "    ssh:",
                "      user: root",
                f"      key: {self.ssh_dir / 'id_ed25519'}",
                f"      known_hosts: {self.ssh_dir / 'known_hosts'}",
                "    fence:",
                "      - method: lab",
                f"        lab_dir: {self.root}",
                "    tags: [lab]",
            ]
        self.inventory_file.write_text("\n".join(lines) + "\n")


def _mounted(path: Path | str) -> bool:
    """``os.path.ismount`` misses a directory bind-mounted onto itself (same device)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _unmount_all(path: Path | str) -> None:
    """Unmount every layer at ``path``; lazily where a layer is busy, and never loop forever."""
    for _ in range(32):
        if not _mounted(path):
            return
        if run("umount", str(path), check=False).returncode != 0:
            run("umount", "-l", str(path), check=False)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _port_open(address: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _package_parent() -> str:
    """Where ``evac`` is importable from, so the reaper runs from any working directory."""
    import evac

    return str(Path(evac.__file__).resolve().parent.parent)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces)")
