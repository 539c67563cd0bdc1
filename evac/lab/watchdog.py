"""The lab's watchdogs: one daemon per host standing in for its hardware watchdog.

The kernel cannot give each namespace its own ``/dev/watchdog``, so each host gets a
daemon (``python -m evac.lab.watchdog --root ROOT --host NAME``) that runs in the root
namespaces, outside the host, like the lab's power switch: it outlives the host it
resets, and a host cut off the network still reaches it, since the host's agent writes
to a FIFO on the filesystem (``<host dir>/watchdog``, the same path inside the host).
So ``cut`` stops the feeding only through the agent's own decision.

The FIFO behaves like a Linux watchdog device (:class:`evac.watchdog.FileWatchdog`):

- a line ``T<seconds>\\n`` sets the timeout (the lab's ``WDIOC_SETTIMEOUT``);
- any other byte feeds; the first feed arms the timer;
- ``V`` and then the writer closing disarms (the magic close);
- the writer closing without ``V`` leaves the timer running (a crashed agent);
- armed and not fed for the timeout, the daemon powers the host off (``kill_host``, the
  power switch's kill) and ignores that writer until it closes, as the reset machine's
  process would be gone. The next writer starts afresh;
- a host powered off since its timer was armed (its boot id is gone or another) took its
  watchdog down with it: the timer does not fire then (``powered_off``
  in the log). Otherwise a fenced host's abandoned timer would reset the host a timeout
  later, once it was powered on again (found by the nemesis: a host half up, its
  libvirtd killed, its agent started after).

Only one writer at a time is meant to hold the FIFO, as only one process may hold a
watchdog device; nothing enforces it. Every change of state (not every feed) is a JSON
line of ``<lab root>/watchdog.log``, which tests read to learn when a watchdog fired.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .layout import LabError
from .processes import HostProcesses, _package_parent, alive, terminate

POLL = 0.05  # the timer's precision, in seconds
DEFAULT_TIMEOUT = 60.0  # softdog's default, until a writer sets one
MAX_LINE = 32  # a longer T line is garbage
START_WAIT = 10.0


class WatchdogEvent(StrEnum):
    """What ``watchdog.log`` records: changes of state, never a single feed."""

    ARMED = "armed"
    DISARMED = "disarmed"
    ABANDONED = "abandoned"
    FIRED = "fired"
    POWERED_OFF = "powered_off"
    TIMEOUT_SET = "timeout_set"


@dataclass
class Timer:
    """One watchdog's state, driven by the bytes its writer sends and by the clock.

    Pure: the daemon feeds it what it reads (``take``), the writer's close (``closed``)
    and the time (``due``), and writes down the events it returns.
    """

    host: str
    timeout: float = DEFAULT_TIMEOUT
    armed: bool = False
    last_fed: float = 0.0  # monotonic
    last_fed_ts: float | None = None  # wall clock, for the log
    expect_close: bool = False  # the last byte was the magic V
    writing: bool = False  # the current writer sent something
    deaf: bool = False  # fired under the current writer: ignore it until it closes
    line: bytearray | None = None  # a T line being read
    complaints: list[str] = field(default_factory=list)

    def take(self, data: bytes, mono: float, wall: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.deaf:
            return events
        self.writing = True
        for byte in data:
            if self.line is not None:
                if byte == ord("\n"):
                    events.extend(self._set_timeout(bytes(self.line), mono, wall))
                    self.line = None
                elif len(self.line) >= MAX_LINE:
                    self.complaints.append(f"ignored a timeout line longer than {MAX_LINE} bytes")
                    self.line = None
                else:
                    self.line.append(byte)
            elif byte == ord("T"):
                self.line = bytearray()
                self.expect_close = False
            elif byte == ord("V"):
                self.expect_close = True
                if self.armed:
                    self._fed(mono, wall)
            else:
                self.expect_close = False
                if not self.armed:
                    self.armed = True
                    self._fed(mono, wall)
                    events.append(self.event(WatchdogEvent.ARMED, mono, wall))
                else:
                    self._fed(mono, wall)
        return events

    def closed(self, mono: float, wall: float) -> list[dict[str, Any]]:
        """The writer closed: the magic close disarms, any other close leaves the timer running."""
        events = []
        if self.armed and not self.deaf:
            if self.expect_close:
                self.armed = False
                events.append(self.event(WatchdogEvent.DISARMED, mono, wall))
            else:
                events.append(self.event(WatchdogEvent.ABANDONED, mono, wall))
        self.expect_close = self.writing = self.deaf = False
        self.line = None
        return events

    def remaining(self, mono: float) -> float:
        return self.last_fed + self.timeout - mono if self.armed else math.inf

    def due(self, mono: float) -> bool:
        return self.armed and self.remaining(mono) <= 0

    def fire(self, mono: float, wall: float, kind: WatchdogEvent = WatchdogEvent.FIRED) -> dict[str, Any]:
        """Due: the host is reset (``FIRED``), or it lost power since the timer was armed
        and the timer went down with it (``POWERED_OFF``); either way that writer is gone."""
        self.armed = False
        self.deaf = self.writing
        return self.event(kind, mono, wall)

    def event(self, kind: WatchdogEvent, mono: float, wall: float) -> dict[str, Any]:
        return {
            "ts": wall,
            "mono": mono,
            "host": self.host,
            "event": str(kind),
            "timeout": self.timeout,
            "last_fed_ts": self.last_fed_ts,
        }

    def _fed(self, mono: float, wall: float) -> None:
        self.last_fed, self.last_fed_ts = mono, wall

    def _set_timeout(self, text: bytes, mono: float, wall: float) -> list[dict[str, Any]]:
        try:
            seconds = float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            seconds = math.nan
        if not 0 < seconds < math.inf:
            self.complaints.append(f"ignored a timeout of {text!r}: expected seconds above 0")
            return []
        self.timeout = seconds
        if self.armed:  # as WDIOC_SETTIMEOUT does, setting the timeout also feeds
            self._fed(mono, wall)
        return [self.event(WatchdogEvent.TIMEOUT_SET, mono, wall)]


def watch(
    path: Path,
    host: str,
    power_off: Callable[[], None],
    record: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    ready: Callable[[], None] = lambda: None,
    boot: Callable[[], object] = lambda: None,
) -> None:
    """Serve the watchdog FIFO at ``path`` until ``stop`` is set or the FIFO is no longer
    ours (the lab was torn down, or another daemon took over); ``power_off`` when it fires,
    unless ``boot`` (what identifies the host's current power-on) changed since it armed.

    The FIFO appears under its name already open for reading (made aside, then renamed),
    so a writer never finds it without a reader, which would look like a stopped daemon.
    """
    fd = _listen(path)
    mine = os.fstat(fd).st_ino
    timer = Timer(host)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ready()
    checked = time.monotonic()
    armed_boot: object = None

    def expire() -> None:
        if boot() != armed_boot:
            record(timer.fire(time.monotonic(), time.time(), WatchdogEvent.POWERED_OFF))
            return
        record(timer.fire(time.monotonic(), time.time()))
        try:
            power_off()
        except Exception as exc:  # the daemon must live on to serve the next boot
            print(f"evac.lab.watchdog {host}: power off failed: {exc}", file=sys.stderr, flush=True)

    try:
        while not stop.is_set():
            wait = min(POLL, max(0.0, timer.remaining(time.monotonic())))
            data = _read(fd) if poller.poll(wait * 1000) else None
            if timer.due(time.monotonic()):  # a byte read late is no feed in time: fire first
                expire()
            if data:
                for event in timer.take(data, time.monotonic(), time.time()):
                    if event["event"] == WatchdogEvent.ARMED:
                        armed_boot = boot()
                    record(event)
            elif data is not None:
                for event in timer.closed(time.monotonic(), time.time()):
                    record(event)
                # a fresh reader: the old one reports the hang-up until a new writer opens
                try:
                    fresh = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError as exc:
                    print(f"evac.lab.watchdog {host}: {path}: {exc.strerror}; exiting", file=sys.stderr)
                    return
                poller.unregister(fd)
                os.close(fd)
                fd = fresh
                poller.register(fd, select.POLLIN)
            for complaint in timer.complaints:
                print(f"evac.lab.watchdog {host}: {complaint}", file=sys.stderr, flush=True)
            timer.complaints.clear()
            if timer.due(time.monotonic()):
                expire()
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                if _inode(path) != mine:
                    print(f"evac.lab.watchdog {host}: {path} is gone or replaced; exiting", file=sys.stderr)
                    return
    finally:
        if _inode(path) == mine:
            path.unlink(missing_ok=True)
        os.close(fd)


def _listen(path: Path) -> int:
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    aside.unlink(missing_ok=True)
    os.mkfifo(aside, 0o600)
    fd = os.open(aside, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.rename(aside, path)
    return fd


def _read(fd: int) -> bytes | None:
    """What the writer sent, ``b""`` when it closed, None when there was nothing after all."""
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return None


def _inode(path: Path) -> int | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino if stat.S_ISFIFO(found.st_mode) else None


def append_line(path: Path, entry: dict[str, Any]) -> None:
    """One JSON line, in one write: the hosts' daemons share the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


class LabWatchdogs(HostProcesses):
    """Per-host watchdog daemons in the root namespace."""

    @property
    def watchdog_log_file(self) -> Path:
        return self.root / "watchdog.log"

    def watchdog_path(self, name: str) -> Path:
        """The host's watchdog FIFO; a process inside the host sees it at the same path."""
        return self.host_dir(name) / "watchdog"

    def _watchdog_pidfile(self, name: str) -> Path:
        return self.host_dir(name) / "watchdog.pid"

    def _watchdog_argv(self, name: str) -> list[str]:
        return [sys.executable, "-m", "evac.lab.watchdog", "--root", str(self.root.resolve()), "--host", name]

    def watchdog_pid(self, name: str) -> int | None:
        """The host's daemon, as its pidfile names it, if that process is still this daemon."""
        try:
            pid = int(self._watchdog_pidfile(name).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        wanted = [a.encode() for a in self._watchdog_argv(name)[1:]]
        return pid if cmdline[1 : 1 + len(wanted)] == wanted and alive(pid) else None

    def watchdog_running(self, name: str) -> bool:
        return self.watchdog_pid(name) is not None

    def start_watchdog(self, name: str) -> None:
        """Start the host's daemon (log ``<host dir>/log/watchdog.log``) and return once its
        FIFO is there; nothing when it runs already."""
        self.host(name)
        if self.watchdog_running(name):
            return
        fifo = self.watchdog_path(name)
        fifo.unlink(missing_ok=True)  # a killed daemon's: the new one's appearing means ready
        log = self.host_dir(name) / "log" / "watchdog.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self._watchdog_argv(name),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                # evac.lab imports this module before ``-m`` runs it, which runpy warns about
                env={**os.environ, "PYTHONPATH": _package_parent(), "PYTHONWARNINGS": "ignore::RuntimeWarning:runpy"},
            )
        self._watchdog_pidfile(name).write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_WAIT
        while _inode(fifo) is None:
            if proc.poll() is not None:
                raise LabError(f"the watchdog daemon for {name} exited with {proc.returncode} (see {log})")
            if time.monotonic() > deadline:
                terminate([proc.pid])
                raise LabError(f"the watchdog daemon for {name} made no FIFO within {START_WAIT:.0f} s (see {log})")
            time.sleep(0.02)

    def stop_watchdog(self, name: str) -> None:
        """Stop the host's daemon; an armed timer dies with it, without firing."""
        pid = self.watchdog_pid(name)
        if pid is not None:
            terminate([pid])
        self._watchdog_pidfile(name).unlink(missing_ok=True)
        if _inode(self.watchdog_path(name)) is not None:
            self.watchdog_path(name).unlink(missing_ok=True)

    def stop_watchdogs(self) -> None:
        """Stop every host's watchdog daemon (``Lab.down``, before the hosts' processes die
        under armed timers); hosts are found on disk, so a half-removed lab is covered too."""
        for pidfile in sorted((self.root / "hosts").glob("*/watchdog.pid")):
            self.stop_watchdog(pidfile.parent.name)

    def watchdog_log(self) -> list[dict[str, Any]]:
        """Every line of ``watchdog.log``, oldest first."""
        try:
            text = self.watchdog_log_file.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evac.lab.watchdog", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the lab's directory")
    parser.add_argument("--host", required=True, help="the lab host this watchdog resets")
    args = parser.parse_args(argv)
    from .rig import Lab  # the rig imports this module

    lab = Lab.open(args.root)
    try:
        lab.host(args.host)
    except LabError as exc:
        print(f"evac.lab.watchdog: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    watch(
        lab.watchdog_path(args.host),
        args.host,
        lambda: lab.kill_host(args.host),
        lambda entry: append_line(lab.watchdog_log_file, entry),
        stop,
        ready=lambda: print(f"evac.lab.watchdog {args.host}: serving {lab.watchdog_path(args.host)}", flush=True),
        boot=lambda: lab.boot(args.host),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
