"""Watchdog method ``device``: a Linux watchdog device (setting ``device``, default ``/dev/watchdog``).

Hardware watchdogs (iTCO_wdt, sp5100_tco, a BMC's ipmi_watchdog) and softdog, the
kernel's software timer, all look the same from here. softdog creates no device until it
is loaded: ``modprobe softdog`` (and list it in ``/etc/modules-load.d`` so it survives a
reboot). It is a kernel timer, so a hung kernel stops it too; hardware does not have
that weakness.

Opening the device starts its timer, ``WDIOC_SETTIMEOUT`` sets the timeout, and ``arm``
returns what ``WDIOC_GETTIMEOUT`` reads back: drivers round to what the hardware can
count, and the leader must never wait less than the device really runs.

The magic close is what makes the device a fence. Closing it stops the timer only right
after a ``V`` was written; ``evac agent`` writes it on a clean stop, after it recorded
``stopped`` in etcd, so a stopped agent never resets its host and is never counted as
fenced. A crashed agent closes without it, the host is reset, and the leader may count it
fenced: a host without a working agent cannot prove it does not run its guests. A driver
loaded with ``nowayout=1`` (a module option of most drivers, or a kernel built with
``CONFIG_WATCHDOG_NOWAYOUT``) ignores the magic close, so even a clean stop resets the
host within the timeout. One process at a time may hold the device: where sanlock's wdmd
or the ``watchdog`` daemon run, they own it.
"""

from __future__ import annotations

import errno
import fcntl
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evac import hookimpl
from evac.errors import ConfigError
from evac.watchdog import FileWatchdog, WatchdogError, WatchdogMethod, open_for_writing

WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
DEFAULT_DEVICE = "/dev/watchdog"

Ioctl = Callable[[int, int, bytes], bytes]


def _ioctl(fd: int, request: int, arg: bytes) -> bytes:
    return fcntl.ioctl(fd, request, arg)


def set_device_timeout(path: Path, fd: int, timeout: float, ioctl: Ioctl = _ioctl) -> float:
    """Ask for ``timeout`` in whole seconds, rounded down (a device that fires early is a
    safe fence, one that fires late is not), and return what the driver says it runs."""
    asked = max(1, int(timeout))
    try:
        ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", asked))
    except OSError as exc:
        if exc.errno == errno.ENOTTY:
            raise WatchdogError(f"watchdog {path}: not a watchdog device (it refuses WDIOC_SETTIMEOUT)") from None
        if exc.errno != errno.EOPNOTSUPP:  # a fixed timeout: read it back below
            raise WatchdogError(f"watchdog {path}: refuses a timeout of {asked} s: {exc.strerror}") from None
    try:
        (runs,) = struct.unpack("i", ioctl(fd, WDIOC_GETTIMEOUT, struct.pack("i", 0)))
    except OSError as exc:
        raise WatchdogError(f"watchdog {path}: cannot read its timeout back: {exc.strerror}") from None
    return float(runs)


def device_watchdog(settings: Mapping[str, Any], ioctl: Ioctl = _ioctl) -> FileWatchdog:
    """The watchdog at ``settings["device"]``; nothing is opened until ``arm``."""
    device = settings.get("device", DEFAULT_DEVICE)
    if not isinstance(device, str) or not device.startswith("/"):
        raise ConfigError(f"agent.watchdog.device: expected a device path, like /dev/watchdog, got {device!r}")
    path = Path(device)
    return FileWatchdog(path, lambda fd, timeout: set_device_timeout(path, fd, timeout, ioctl), open_device)


def open_device(path: Path) -> int:
    if not path.exists():
        raise WatchdogError(f"watchdog {path}: no such device (load a driver; for softdog: modprobe softdog)")
    return open_for_writing(path)


@hookimpl
def evac_watchdogs() -> list[WatchdogMethod]:
    return [
        WatchdogMethod(
            "device",
            device_watchdog,
            description="A Linux watchdog device (/dev/watchdog): hardware, or softdog after modprobe softdog.",
            optional=("device",),
        )
    ]
