"""An IPMI BMC for one lab host, on pyghmi's BMC server (as OpenStack's virtualbmc is).

Its chassis power is the lab's power switch, so a standard agent speaking IPMI 2.0
(``fence_ipmilan`` through ``ipmitool -I lanplus``) really powers the host off.

    python -m tests.integration.ipmibmc LAB_ROOT HOST PORT USER PASSWORD
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyghmi.ipmi import bmc

from evac.lab import Lab


class LabBmc(bmc.Bmc):  # type: ignore[misc]  # pyghmi is untyped
    def __init__(self, lab: Lab, host: str, port: int, user: str, password: str) -> None:
        super().__init__({user: password}, port=port, address="127.0.0.1")
        self.lab = lab
        self.host = host

    def get_power_state(self) -> str:
        return self.lab.power_state(self.host)

    def power_off(self) -> None:
        self.lab.kill_host(self.host)

    def power_shutdown(self) -> None:  # the lab has no ACPI: a soft off is a hard one
        self.lab.kill_host(self.host)

    def power_on(self) -> None:
        self.lab.start_host(self.host)

    def power_reset(self) -> None:
        self.lab.kill_host(self.host)
        self.lab.start_host(self.host)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_bmc(lab: Lab, host: str, user: str = "admin", password: str = "s3cret") -> Iterator[int]:
    """This BMC for ``host`` in a process of its own, on a free loopback UDP port (yielded);
    afterwards the host is powered on again if a test powered it off through the BMC."""
    port = free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.ipmibmc", str(lab.root), host, str(port), user, password],
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        if lab.power_state(host) == "off":
            lab.start_host(host)


if __name__ == "__main__":
    root, host, port, user, password = sys.argv[1:]
    server = LabBmc(Lab.open(root), host, int(port), user, password)
    print("listening", flush=True)
    server.listen()
