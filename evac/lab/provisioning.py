"""Building a lab up and tearing it down: bridge, namespaces, keys, certificates, daemons.

``up`` is idempotent (it keeps what is healthy and repairs the rest) and ends by writing
``hosts.yaml``, the inventory the rest of evac reads. ``down`` removes every trace but
caches (guest kernel, QEMU capabilities, ssh keys, the lab CA).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

from .etcd import EtcdCluster
from .fabric import Fabric
from .hostconfig import write_configs
from .layout import LabError, LabHost
from .pki import ensure_ca, issue_libvirt_client, issue_libvirt_server, issue_qemu_credentials
from .processes import mounted, port_open, run, terminate, unmount_all

# Plugin modules the lab's inventory needs: its fence method kills processes, so a
# production install never loads it; an inventory that names it opts in.
INVENTORY_PLUGINS = ("evac.lab.plugin",)


class Provisioning(EtcdCluster, Fabric):
    """``up`` and ``down``, and the inventory ``up`` writes."""

    def up(self, hosts: int = 3, etcd: bool = False) -> float:
        """Create or repair the hosts; returns the seconds it took.

        Re-running ``up`` keeps what is healthy (guests included) and repairs the rest;
        a different host count rebuilds the lab. With ``etcd`` every host also runs an
        etcd member, started after libvirtd, and ``up`` returns once the cluster is
        healthy; without it, a cluster an earlier ``up`` started is removed (``up``
        brings the lab into the state asked for).
        """
        started = time.monotonic()
        if not 1 <= hosts <= 200:
            raise LabError(f"--hosts: expected 1 to 200, got {hosts}")
        _require_root()
        wanted = [f"host{i}" for i in range(1, hosts + 1)]
        if self.host_names() and self.host_names() != wanted:
            self.down()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # evac refuses an inventory in a directory others can write
        had_etcd = self.has_etcd()
        self.state_file.write_text(json.dumps({"hosts": wanted, "prefix": self.prefix, "net": self.net, "etcd": etcd}))
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
            if not port_open(h.address, 22):
                self._start_sshd(h)
        for h in self.hosts():
            self._wait_port(h, 22, "sshd")
            self._ensure_pool(h)
        self.ensure_fabric()
        if etcd:
            self._ensure_etcd()
        elif had_etcd:
            self._remove_etcd()
        self._save_capabilities()
        write_inventory(self.inventory_file, self.inventory_text())
        return time.monotonic() - started

    def down(self) -> None:
        """Remove every trace of the lab but caches: processes, namespaces, links, mounts.

        An etcd member's tmpfs lives in its host's mount namespace and goes with it.
        """
        names = self.host_names() or self._hosts_on_disk()
        pids = [p for n in names for p in self.pids(n)]
        terminate(pids)
        for name in names:
            netns = f"{self.prefix}-{name}"
            for pinned in (self._mnt(name), self._uts(name)):
                unmount_all(pinned)
            if Path(f"/run/netns/{netns}").exists():
                run("ip", "netns", "del", netns, check=False)
            veth = f"{self.prefix}h{name.removeprefix('host')}"
            if _link_exists(veth):
                run("ip", "link", "del", veth, check=False)
        self.remove_fabric()
        if _link_exists(self.bridge):
            run("ip", "link", "del", self.bridge, check=False)
        unmount_all(self.ns_dir)
        self._remove_marked_run_dirs()
        for path in (self.root / "hosts", self.ns_dir, *(self.shared / d for d in ("disks", "console", "lockspace"))):
            shutil.rmtree(path, ignore_errors=True)
        journal = self.root / "journal.db"
        for path in (
            self.state_file,
            self.inventory_file,
            self.root / "etc-hosts",
            self.root / "power.log",
            self.root / "power.lock",
            self.root / "watchdog.log",
            self.root / "empty-bashrc",
            self.root / "guest-addresses.lock",
            journal,
            journal.with_suffix(".db-wal"),
            journal.with_suffix(".db-shm"),
        ):
            path.unlink(missing_ok=True)

    def inventory_text(self) -> str:
        """The lab's hosts as an evac inventory (``hosts.yaml``), fenced through the lab's power switch."""
        lines = [
            "# Written by `evac lab up`: the lab's hosts as an evac inventory.",
            "# The fence method `lab` kills a host's processes; it comes from a plugin that",
            "# only an inventory naming it loads.",
            "plugins:",
            *(f"  - {module}" for module in INVENTORY_PLUGINS),
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
        return "\n".join(lines) + "\n"

    def _hosts_on_disk(self) -> list[str]:
        hosts_dir = self.root / "hosts"
        return sorted(p.name for p in hosts_dir.iterdir()) if hosts_dir.exists() else []

    def _ensure_ns_dir(self) -> None:
        self.ns_dir.mkdir(parents=True, exist_ok=True)
        if not mounted(self.ns_dir):
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
        write_configs(self, h)
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
        if not mounted(self._mnt(h.name)):
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
                    # sshd's commands run root's shell, which reads ~/.bashrc: a developer's
                    # (pyenv, conda) would cost every SSH round trip to a lab host ~0.3 s
                    f"if [ -f /root/.bashrc ]; then mount --bind {self.root}/empty-bashrc /root/.bashrc; fi",
                ]
            )
            (self.root / "empty-bashrc").touch()
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
        """Remove the system directories ``up`` created (and only those), once nothing uses them."""
        for name, path in ((".created_run_libvirt", "/run/libvirt"), (".created_run_sshd", "/run/sshd")):
            if path == "/run/sshd" and run("pgrep", "-x", "sshd", check=False).returncode == 0:
                continue  # another lab's (or the machine's) sshd needs it for every new session
            if (self.root / name).exists():
                try:
                    os.rmdir(path)
                except OSError:
                    pass
                (self.root / name).unlink()
        marker = self.root / ".created_run_netns"
        if marker.exists() and Path("/run/netns").exists() and not os.listdir("/run/netns"):
            unmount_all("/run/netns")
            try:
                os.rmdir("/run/netns")
            except OSError:
                pass
            marker.unlink()


def write_inventory(path: Path, text: str) -> None:
    """Write ``hosts.yaml`` so evac accepts it whatever the umask: the file 0644, replaced
    whole, in a directory neither its group nor others can write (``check_trusted_file``)."""
    directory = path.parent
    directory.chmod(stat.S_IMODE(directory.stat().st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, path)


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces)")
