"""Watchdogs: the timer that resets a host whose agent stops feeding it.

``evac agent`` feeds its host's watchdog only while the host is healthy, so a host cut off
from everything resets itself and the leader can count it fenced without a BMC
(:mod:`evac.selffence`). Every watchdog behaves like a Linux watchdog device
(``Documentation/watchdog/watchdog-api.rst``): arming starts the timer, any write feeds
it, and closing stops it only right after a ``V`` was written, the "magic close". A close
without it, which is what a crash amounts to, leaves the timer running and the host is
reset when it expires. That difference is the whole point: the agent disarms on a clean
stop only, after it recorded ``stopped`` in etcd, and a dead agent never does.

A plugin provides a method by returning a :class:`WatchdogMethod` from
``evac_watchdogs()``. The agent's ``agent.watchdog`` section names it in ``method``; its
other keys (but ``timeout``, the agent's own) are the method's settings.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import pluggy

from .errors import ConfigError, EvacError
from .registry import by_name
from .yamldoc import suggest

METHOD_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
FEED = b"\0"  # any byte but the magic one feeds
MAGIC = b"V"  # written right before the close that stops the timer

TimeoutSetter = Callable[[int, float], float]
Opener = Callable[[Path], int]


class WatchdogError(EvacError):
    """A watchdog could not be armed, fed or disarmed; the message is one line."""


@runtime_checkable
class Watchdog(Protocol):
    """What a watchdog method's factory returns: one host's watchdog, not yet armed."""

    @property
    def armed(self) -> bool:
        """True from a successful ``arm`` until ``disarm`` or ``abandon``."""
        ...

    def arm(self, timeout: float) -> float:
        """Open the watchdog, set its timeout, feed it once; return the timeout it will
        actually use (a device may round). ``WatchdogError`` when it cannot."""
        ...

    def feed(self) -> None:
        """Restart the timer."""
        ...

    def disarm(self) -> None:
        """The magic close: the timer stops (a clean stop)."""
        ...

    def abandon(self) -> None:
        """Close without the magic close: the timer keeps running and the host is reset
        when it expires (what a crash amounts to)."""
        ...


def open_for_writing(path: Path) -> int:
    """Open a watchdog device the way the kernel's watchdog API expects: write-only."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        busy = " (another process holds it: a watchdog daemon, wdmd, or a second agent)"
        hint = busy if exc.errno == errno.EBUSY else ""
        raise WatchdogError(f"watchdog {path}: cannot open: {exc.strerror}{hint}") from None


class FileWatchdog:
    """The Linux watchdog-device semantics over a file: open write-only, feed with any byte
    but ``V``, disarm with ``V`` then close, abandon by closing without it.

    Devices differ only in how the timeout is set, so that step is given:
    ``set_timeout(fd, requested)`` sets it on the open file and returns the timeout the
    device will use. ``opener`` opens the file (a FIFO needs other care than a device).
    """

    def __init__(self, path: Path | str, set_timeout: TimeoutSetter, opener: Opener = open_for_writing) -> None:
        self.path = Path(path)
        self._set_timeout = set_timeout
        self._opener = opener
        self._fd: int | None = None
        self._lock = threading.Lock()  # the feeding thread and a stopping one

    def __repr__(self) -> str:
        return f"FileWatchdog({str(self.path)!r}, armed={self.armed})"

    @property
    def armed(self) -> bool:
        return self._fd is not None

    def arm(self, timeout: float) -> float:
        if not timeout > 0:
            raise WatchdogError(f"watchdog {self.path}: timeout must be above 0 s, got {timeout!r}")
        with self._lock:
            if self._fd is not None:
                raise WatchdogError(f"watchdog {self.path}: already armed")
            fd = self._opener(self.path)
            try:
                actual = self._set_timeout(fd, timeout)
                os.write(fd, FEED)
            except BaseException as exc:
                # opening a device already started its timer: stop it, nothing was armed
                _close(fd, MAGIC)
                if isinstance(exc, OSError):
                    raise WatchdogError(f"watchdog {self.path}: cannot arm: {exc.strerror}") from None
                raise
            self._fd = fd
            return actual

    def feed(self) -> None:
        with self._lock:
            if self._fd is None:
                raise WatchdogError(f"watchdog {self.path}: fed while not armed")
            try:
                os.write(self._fd, FEED)
            except OSError as exc:
                raise WatchdogError(f"watchdog {self.path}: feeding failed: {exc.strerror}") from None

    def disarm(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        failed = _close(fd, MAGIC)
        if failed:
            raise WatchdogError(f"watchdog {self.path}: the magic close failed ({failed}): its timer may still run")

    def abandon(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            _close(fd, b"")


def _close(fd: int, last: bytes) -> str:
    """Write ``last`` (if any) and close; the reason the write failed, or ``""``."""
    failed = ""
    try:
        if last:
            os.write(fd, last)
    except OSError as exc:
        failed = exc.strerror or str(exc)
    finally:
        os.close(fd)
    return failed


@dataclass(frozen=True)
class WatchdogMethod:
    """A watchdog method a plugin registers through ``evac_watchdogs``.

    ``factory(settings)`` builds the watchdog from ``agent.watchdog`` without ``method``
    and ``timeout``; it must not open anything yet, since ``evac config check`` calls it to
    check the settings. ``required`` and ``optional`` name the settings the method takes:
    a missing required one and an unknown one are one-line errors naming the setting.
    ``optional=None`` accepts any other setting.
    """

    name: str
    factory: Callable[[Mapping[str, Any]], Watchdog]
    description: str = ""
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] | None = ()

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= METHOD_NAME_CHARS:
            raise ValueError(f"watchdog method name {self.name!r}: expected a lowercase word, like device")

    @property
    def settings(self) -> tuple[str, ...]:
        """Every setting the method names (required first)."""
        return (*self.required, *(self.optional or ()))


def registered_watchdog_methods(pm: pluggy.PluginManager) -> list[tuple[str, WatchdogMethod]]:
    """(plugin name, method) for every registration through ``evac_watchdogs``, duplicates included."""
    hook = getattr(pm.hook, "evac_watchdogs", None)
    if hook is None:  # no plugin implements it (and no spec declares it)
        return []
    pairs: list[tuple[str, WatchdogMethod]] = []
    for impl in reversed(hook.get_hookimpls()):
        methods = cast("Iterable[WatchdogMethod] | None", impl.function())
        pairs.extend((impl.plugin_name, method) for method in methods or ())
    return pairs


def watchdog_methods(pm: pluggy.PluginManager) -> dict[str, WatchdogMethod]:
    """Every registered watchdog method by name; a name registered twice is an error naming both plugins."""
    return by_name("watchdog method", registered_watchdog_methods(pm))


def watchdog_for(pm: pluggy.PluginManager, settings: Mapping[str, Any], *, field: str = "agent.watchdog") -> Watchdog:
    """The watchdog ``settings`` describe (``method`` names it, the rest are its settings),
    not armed yet. A bad method or setting is a ``ConfigError`` naming ``field``."""
    name = settings.get("method")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field}.method: required: a watchdog method, like device")
    methods = watchdog_methods(pm)
    method = methods.get(name)
    if method is None:
        known = sorted(methods)
        raise ConfigError(
            f"{field}.method: unknown watchdog method '{name}'{suggest(name, known)}; "
            f"known: {', '.join(known) or 'none'}"
        )
    given = {str(key): value for key, value in settings.items() if key != "method"}
    for key in method.required:
        if key not in given:
            raise ConfigError(f"{field}.{key}: required by watchdog method '{name}'")
    if method.optional is not None:
        for key in given:
            if key not in method.settings:
                raise ConfigError(
                    f"{field}.{key}: unknown setting for watchdog method '{name}'{suggest(key, method.settings)}; "
                    f"it takes: {', '.join(method.settings) or 'none'}"
                )
    return method.factory(given)
