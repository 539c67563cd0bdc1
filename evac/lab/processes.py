"""Running, finding and killing processes inside a lab host's namespaces.

A host's processes are found by mount-namespace inode, never by name, so ``down`` and
``kill-host`` touch nothing that is not the lab's. Daemons run under a small subreaper
(``evac.lab.reaper``) so that libvirt does not wait on PID 1 to reap a stopped QEMU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .layout import LabError, LabHost, LabLayout


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace; a failure is a ``LabError`` with its output."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class HostProcesses(LabLayout):
    """What runs inside each host: entering its namespaces, listing, spawning and killing."""

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

    def _mnt_inode(self, name: str) -> int | None:
        """The inode of the host's mount namespace: from its pinned file, else as recorded.

        The record lets ``down`` find a host's processes even when the pin is gone.
        """
        if mounted(self._mnt(name)):
            return os.stat(self._mnt(name)).st_ino
        record = self.host_dir(name) / "mntns"
        return int(record.read_text()) if record.exists() else None

    def pids(self, name: str) -> list[int]:
        """Every process living in the host's mount namespace.

        Without the pin, the recorded inode may name a namespace the kernel has since
        freed and given to another lab's host (namespace inodes are reused): a process
        counts then only if its mounts show this host's own directory."""
        inode = self._mnt_inode(name)
        if inode is None:
            return []
        pinned = mounted(self._mnt(name))
        own = f" {_within_filesystem(self.host_dir(name))}/"  # mountinfo's 4th field
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/mnt").st_ino != inode:
                    continue
                if pinned or own in Path(f"/proc/{entry}/mountinfo").read_text():
                    found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        return found

    def evac_pids(self, name: str, command: str) -> list[int]:
        """The host's live ``evac … COMMAND`` processes (``serve``, ``agent``), not their reapers."""
        found = []
        for pid in self.pids(name):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"evac" in cmdline and command.encode() in cmdline and not is_reaper(pid) and alive(pid):
                found.append(pid)
        return found

    def _spawn(self, h: LabHost, argv: list[str], log: Path) -> None:
        """Start ``argv`` detached inside the host, under its own subreaper."""
        with open(log, "ab") as out:
            subprocess.Popen(
                [*self.nsenter(h.name), sys.executable, "-m", "evac.lab.reaper", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": _package_parent()},
            )


def _within_filesystem(path: Path) -> str:
    """``path`` as the filesystem it lives on names it (what /proc/PID/mountinfo shows as
    a bind mount's root): relative to that filesystem's mount point."""
    path = path.resolve()
    top = next((p for p in (path, *path.parents) if os.path.ismount(p)), Path("/"))
    return "/" + str(path.relative_to(top)) if path != top else "/"


def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after ``grace`` seconds."""
    signal_pids(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return
        time.sleep(0.05)
    signal_pids(pids, signal.SIGKILL)


def signal_pids(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
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


def is_reaper(pid: int) -> bool:
    try:
        return b"evac.lab.reaper" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def daemon_name(pid: int) -> str:
    """The program a process runs (``libvirtd``, ``sshd``...), or ``""`` once it is gone."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return ""
    return os.path.basename(argv0.decode(errors="replace"))


def mounted(path: Path | str) -> bool:
    """``os.path.ismount`` misses a directory bind-mounted onto itself (same device)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def unmount_all(path: Path | str) -> None:
    """Unmount every layer at ``path``; lazily where a layer is busy, and never loop forever."""
    for _ in range(32):
        if not mounted(path):
            return
        if run("umount", str(path), check=False).returncode != 0:
            run("umount", "-l", str(path), check=False)


def port_open(address: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _package_parent() -> str:
    """Where ``evac`` is importable from, so the reaper runs from any working directory."""
    import evac

    return str(Path(evac.__file__).resolve().parent.parent)
