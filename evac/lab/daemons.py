"""The daemons a lab host runs (virtlockd, libvirtd, sshd): starting them and waiting for them.

Shared by provisioning (``up``) and by power-on after a fault (``start-host``), so a host
that comes back runs exactly what a new one does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .layout import LabError, LabHost
from .processes import HostProcesses, daemon_name, port_open

LIBVIRTD = "/usr/sbin/libvirtd"
VIRTLOCKD = "/usr/sbin/virtlockd"
SSHD = "/usr/sbin/sshd"
LIBVIRT_PORT = 16509
LIBVIRT_TLS_PORT = 16514


class HostDaemons(HostProcesses):
    """Start a host's daemons and wait, with a deadline, until they answer."""

    def libvirtd_ready(self, name: str) -> bool:
        return any(daemon_name(p) == "libvirtd" for p in self.pids(name)) and port_open(
            self.host(name).address, LIBVIRT_PORT
        )

    def _start_daemons(self, h: LabHost) -> None:
        run_dir = self.host_dir(h.name) / "run"
        boot = self.host_dir(h.name) / "boot"
        if not boot.exists():  # powered on (``Faults.boot``)
            boot.write_text(f"{uuid.uuid4()}\n")
        out = self.host_dir(h.name) / "log" / "daemons.out"
        # A privileged libvirtd does not spawn virtlockd, and its QEMU driver fails without it.
        if not any(daemon_name(p) == "virtlockd" for p in self.pids(h.name)):
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
        self._wait_for(lambda: port_open(h.address, port), f"{what} on {h.name}", log, h, timeout)

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
