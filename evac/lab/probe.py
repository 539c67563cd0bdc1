"""What a guest's users see: echoes from the lab's client to guests, and the gaps in the answers.

The probe runs in the client's namespace (on the guest segment, as a user would be), in
a process of its own: ``python -m evac.lab.probe --interval S NAME=ADDRESS...``. It
prints one JSON line a second while it runs (``progress``: every guest's
:class:`evac.echo.EchoStats` so far) and, on SIGTERM, SIGINT or ``--duration``, a last one
with every probe's send and answer time (``final``), so the caller reads the counts for
any moment it marked (``after`` a fault) with the same rule. Times are
``time.monotonic()``, which every process on the machine shares.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import IO

from ..echo import EchoEngine, EchoStats
from ..echo import Probe as Echo
from .layout import LabError

PROGRESS_EVERY = 1.0
TIMEOUT = 1.0  # an echo unanswered this long is lost


def run(targets: Mapping[str, str], interval: float, duration: float | None, out: IO[str]) -> None:
    """Send echoes until told to stop; print progress every second, then every echo."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def orphaned() -> None:  # the parent holds our stdin: when it dies, we stop
        sys.stdin.read()
        stop.set()

    threading.Thread(target=orphaned, daemon=True).start()
    ends = time.monotonic() + duration if duration else None
    with EchoEngine(list(targets.values()), interval, TIMEOUT) as engine:
        print(json.dumps({"started": time.monotonic(), "mode": str(engine.mode)}), file=out, flush=True)
        while not stop.wait(PROGRESS_EVERY):
            rows = {name: asdict(engine.stats(address)) for name, address in targets.items()}
            print(json.dumps({"progress": rows}), file=out, flush=True)
            if ends is not None and time.monotonic() >= ends:
                break
    final = {
        name: {"probes": [[p.sent, p.answered, p.failed] for p in engine.logs[address].probes()], "end": engine.ended}
        for name, address in targets.items()
    }
    print(json.dumps({"final": final}), file=out, flush=True)


class Echoes:
    """One guest's echoes once the probe stopped: read them for any moment."""

    def __init__(self, probes: Sequence[Echo], end: float) -> None:
        self.probes = tuple(probes)
        self.end = end

    def stats(self, after: float | None = None) -> EchoStats:
        return EchoStats.of(self.probes, self.end, TIMEOUT, after)

    def back_after(self, moment: float) -> float | None:
        """When the guest answered again after going silent at or after ``moment`` (a fault):
        the answer to the first echo sent after its first unanswered one. An echo sent just
        after the fault may still be answered by a host that dies a moment later, so the
        first answer after the fault says nothing. None: it has not come back."""
        later = [p for p in self.probes if p.sent >= moment]
        silent = next((i for i, p in enumerate(later) if p.answered is None), None)
        if silent is None:
            return next((p.answered for p in later if p.answered is not None), None)
        return next((p.answered for p in later[silent:] if p.answered is not None), None)

    def between(self, start: float, end: float) -> EchoStats:
        """The echoes sent in a window (a move, say): its longest gap and losses. An outage
        still open when the window closes runs on to the next answer."""
        inside = [p for p in self.probes if start <= p.sent <= end]
        if inside and inside[-1].answered is None:
            for later in (p for p in self.probes if p.sent > end):
                inside.append(later)
                if later.answered is not None:
                    break
        return EchoStats.of(inside, self.end, TIMEOUT)


class ProbeRun:
    """A running probe in the lab's client namespace: the latest counts while it runs, the
    final ones once stopped."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.latest: dict[str, EchoStats] = {}
        self.final: dict[str, Echoes] | None = None
        self.started = threading.Event()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True, name="lab-probe")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            try:
                data = json.loads(line)
            except ValueError:
                continue  # not ours (a warning on stdout): the counts come on their own lines
            if "started" in data:
                self.started.set()
            if "progress" in data:
                self.latest = {n: EchoStats(**e) for n, e in data["progress"].items()}
            if "final" in data:
                self.final = {
                    n: Echoes([Echo(sent, answered, failed) for sent, answered, failed in e["probes"]], e["end"])
                    for n, e in data["final"].items()
                }

    def stop(self, timeout: float = 10) -> dict[str, Echoes]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout)
        if self.final is None:
            error = self.process.stderr.read().strip() if self.process.stderr else ""
            raise LabError(f"lab probe: ended without its counts: {error or ''.join(self.lines[-3:])}")
        return self.final


@contextmanager
def probing(netns: str, targets: Mapping[str, str], interval: float = 0.01) -> Iterator[ProbeRun]:
    """Echo ``targets`` (name -> address) from the namespace ``netns`` while the block runs."""
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "evac.lab.probe", "--interval", str(interval)]
    process = subprocess.Popen(
        [*argv, *(f"{name}={address}" for name, address in targets.items())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = ProbeRun(process)
    try:
        deadline = time.monotonic() + 10
        while not probe.started.wait(0.05) and process.poll() is None and time.monotonic() < deadline:
            pass
        if not probe.started.is_set():
            probe.process.kill()
            probe.process.wait()
            error = process.stderr.read().strip() if process.stderr else ""
            raise LabError(f"lab probe: did not start: {error}")
        yield probe
    finally:
        if probe.process.poll() is None:
            probe.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evac.lab.probe")
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("targets", nargs="+", metavar="NAME=ADDRESS")
    args = parser.parse_args(argv)
    if bad := [t for t in args.targets if "=" not in t]:
        parser.error(f"targets: expected NAME=ADDRESS, got {bad[0]!r}")
    targets = dict(t.split("=", 1) for t in args.targets)
    run(targets, args.interval, args.duration, sys.stdout)


if __name__ == "__main__":
    main()
