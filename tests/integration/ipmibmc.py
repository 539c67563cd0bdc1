"""An IPMI BMC for one lab host, on pyghmi's BMC server (as OpenStack's virtualbmc is).

Its chassis power is the lab's power switch, so a standard agent speaking IPMI 2.0
(``fence_ipmilan`` through ``ipmitool -I lanplus``) really powers the host off.

    python -m tests.integration.ipmibmc LAB_ROOT HOST PORT USER PASSWORD
"""

from __future__ import annotations

import sys

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


if __name__ == "__main__":
    root, host, port, user, password = sys.argv[1:]
    server = LabBmc(Lab.open(root), host, int(port), user, password)
    print("listening", flush=True)
    server.listen()
