"""Watching the guest segment with tcpdump: who announced which MAC, and when.

After a live migration QEMU announces the guest from its new host (RARP, by default five
times 50-350 ms apart) and a virtio-net guest that negotiated GUEST_ANNOUNCE sends its own
gratuitous ARP; a guest started afresh sends the gratuitous ARP of its boot. The fabric's
bridges learn the MAC's new port from the first of these, so the gap between the
switchover and the first announce is part of what the guest's users see.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .layout import LabError

# tcpdump -e -tt -n: "<epoch> <src mac> > <dst mac>, ethertype Reverse ARP (0x8035), ..."
LINE = re.compile(r"^(?P<ts>\d+\.\d+) (?P<src>[0-9a-f:]{17}) > (?P<dst>[0-9a-f:]{17}), ethertype (?P<type>[^(]+)\(")


@dataclass(frozen=True)
class Announce:
    ts: float
    mac: str
    kind: str  # "RARP" (QEMU's self-announce) or "ARP" (the guest's own)


def parse(line: str) -> Announce | None:
    """One tcpdump line as an announce, if it is a broadcast RARP or ARP."""
    match = LINE.match(line)
    if not match or match["dst"] != "ff:ff:ff:ff:ff:ff":
        return None
    kind = match["type"].strip()
    if kind == "Reverse ARP":
        return Announce(float(match["ts"]), match["src"], "RARP")
    if kind == "ARP":
        return Announce(float(match["ts"]), match["src"], "ARP")
    return None


class Capture:
    """Broadcast RARP and ARP frames on the segment as the client's port sees them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.announces: list[Announce] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True, name="lab-capture")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "listening on" in line:
                self.ready.set()
            found = parse(line)
            if found:
                self.announces.append(found)

    def first(self, mac: str, after: float) -> Announce | None:
        """The first announce of ``mac`` at or after wall-clock ``after``."""
        return next((a for a in self.announces if a.mac == mac and a.ts >= after), None)


@contextmanager
def capturing(netns: str, interface: str = "vx0") -> Iterator[Capture]:
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-e", "-tt", "-i", interface, "arp or rarp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    capture = Capture(process)
    try:
        if not capture.ready.wait(10):
            raise LabError(f"tcpdump on {netns}/{interface} did not start (is tcpdump installed?)")
        yield capture
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
