"""Fence method ``lab``: the local lab's out-of-band power switch, as an opt-in plugin.

It powers a host off by killing its processes, so it is not an entry point: a
production install never loads it. The inventory ``evac lab up`` writes names this
module under ``plugins:``, the way a test suite opts into ``pytester``. It works from
the root namespace, so it reaches a host that is cut off the network, as a BMC on its
own management network would.

The switch checks fencing tokens the way a token-aware BMC proxy would: it refuses a
token older than the newest it accepted, and logs every press to ``power.log``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import tokens
from ..fencing import FenceMethod
from ..hooks import hookimpl
from ..inventory import HostSpec
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
