"""Fence method ``lab``: the local lab's out-of-band power switch, as an opt-in plugin.

It powers a host off by killing its processes, so it is not an entry point: a
production install never loads it. The inventory ``evac lab up`` writes names this
module under ``plugins:``, the way a test suite opts into ``pytester``. It works from
the root namespace, so it reaches a host that is cut off the network, as a BMC on its
own management network would.

The switch checks fencing tokens the way a token-aware BMC proxy would: it refuses a
token older than the newest it accepted, and logs every press to ``power.log``.

It also provides the watchdog method ``lab`` for ``evac agent`` on a lab host: the FIFO
of the host's watchdog daemon (:mod:`evac.lab.watchdog`), which resets the host as a
hardware watchdog would, from outside its namespaces.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tokens
from ..fencing import FenceMethod
from ..hooks import hookimpl
from ..inventory import HostSpec
from ..watchdog import FileWatchdog, WatchdogError, WatchdogMethod
from .layout import DEFAULT_DIR, LabError
from .rig import Lab


@dataclass(frozen=True)
class LabSwitch:
    lab: Lab
    host: str

    def power_off(self) -> None:
        """Refused (``FencingError``) when the calling thread's fencing token is stale."""
        self.lab.power_off(self.host, tokens.token())

    def power_state(self) -> str:
        try:
            return self.lab.power_state(self.host)
        except LabError:
            return "unknown"


def switch(host: HostSpec, settings: Mapping[str, Any]) -> LabSwitch:
    return LabSwitch(Lab.open(settings.get("lab_dir", DEFAULT_DIR)), str(settings.get("host", host.name)))


@hookimpl
def evac_fence_methods() -> list[FenceMethod]:
    return [
        FenceMethod(
            "lab",
            switch,
            description="the local lab's out-of-band power switch (kills the host's processes)",
            optional=("lab_dir", "host"),
        )
    ]


def lab_watchdog(settings: Mapping[str, Any]) -> FileWatchdog:
    """The watchdog of lab host ``host`` (default: this machine's name, which inside a lab
    host is the host's), at ``path`` or where the lab at ``lab_dir`` keeps it."""
    host = str(settings.get("host") or socket.gethostname())
    if settings.get("path"):
        path = Path(str(settings["path"]))
    else:
        path = Lab(settings.get("lab_dir", DEFAULT_DIR)).watchdog_path(host)
    return FileWatchdog(path, write_timeout_line, lambda fifo: open_fifo(fifo, host))


def open_fifo(path: Path, host: str) -> int:
    """Open the daemon's FIFO without hanging when no daemon reads it (a plain open would
    wait for a reader), then write to it blocking, as to a device."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            raise WatchdogError(f"lab watchdog for {host} is not running (evac lab up starts it)") from None
        raise WatchdogError(f"lab watchdog for {host}: {path}: {exc.strerror}") from None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise WatchdogError(f"lab watchdog for {host}: {path} is not the daemon's FIFO")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def write_timeout_line(fd: int, timeout: float) -> float:
    """The lab's ``WDIOC_SETTIMEOUT``: a line ``T<seconds>``; the daemon runs what it reads."""
    text = f"{timeout:g}"
    os.write(fd, f"T{text}\n".encode())
    return float(text)


@hookimpl
def evac_watchdogs() -> list[WatchdogMethod]:
    return [
        WatchdogMethod(
            "lab",
            lab_watchdog,
            description="the local lab's watchdog daemon for a host (powers it off when not fed)",
            optional=("path", "lab_dir", "host"),
        )
    ]
