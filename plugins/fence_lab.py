"""Fence method ``lab``: the local lab's out-of-band power switch.

It works from the root namespace, so it reaches a host that is cut off the network,
as a BMC on its own management network would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evac import hookimpl
from evac.inventory import HostSpec
from evac.lab import Lab, LabError
from evac.lab.rig import DEFAULT_DIR


@dataclass(frozen=True)
class LabSwitch:
    lab: Lab
    host: str

    def power_off(self) -> None:
        self.lab.kill_host(self.host)

    def power_state(self) -> str:
        try:
            return self.lab.power_state(self.host)
        except LabError:
            return "unknown"


@hookimpl
def evac_fence_agent(host: HostSpec, method: str, options: Mapping[str, Any]) -> LabSwitch | None:
    if method != "lab":
        return None
    return LabSwitch(Lab.open(options.get("lab_dir", DEFAULT_DIR)), str(options.get("host", host.name)))
