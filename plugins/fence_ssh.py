"""Fence method ``ssh``: the host powers itself off on command (``command`` option;
default the kernel's immediate power-off through sysrq).

Only meaningful while the host is reachable: it cannot fence a partitioned or hung
host. Its confirmation is weak (the host stops answering on SSH), so put it last in a
chain, after a BMC or PDU.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evac import FenceMethod, hookimpl
from evac.errors import ConfigError, HostUnreachable
from evac.inventory import HostSpec, SshSpec
from evac.remote import run


@dataclass(frozen=True)
class SshPowerOff:
    ssh: SshSpec
    command: str

    def power_off(self) -> None:
        try:
            run(self.ssh, self.command, timeout=5)
        except HostUnreachable as exc:
            if "exited" in str(exc):
                raise
            # the connection dropping under the command is the expected outcome

    def power_state(self) -> str:
        try:
            with socket.create_connection((self.ssh.host, self.ssh.port), timeout=2):
                return "on"
        except OSError:
            return "off"


def ssh_power_off(host: HostSpec, settings: Mapping[str, Any]) -> SshPowerOff:
    if host.ssh is None:
        raise ConfigError(f"{host.name}: fence method ssh needs the host's ssh settings")
    return SshPowerOff(host.ssh, str(settings.get("command", "echo o > /proc/sysrq-trigger")))


@hookimpl
def evac_fence_methods() -> list[FenceMethod]:
    return [
        FenceMethod(
            "ssh",
            ssh_power_off,
            description="The host powers itself off over SSH (weak: put it last in a chain).",
            optional=("command",),
        )
    ]
