"""Fence method ``agent``: any standard fence agent (``fence_ipmilan``, ``fence_redfish``,
``fence_apc_snmp``, ...) through its stdin protocol: ``key=value`` lines in, exit status out.

Options: ``agent`` (the executable), ``timeout``, ``password_file`` (read when fencing and
passed on as ``password``, so the secret stays out of the inventory; a relative path is
taken from the inventory's directory), and every other key passed to the agent as is
(``ip``, ``username``, ``lanplus``, ...). ``action=status`` exits 0 for on and 2 for off,
as the fence-agents API specifies.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from evac import FenceMethod, hookimpl
from evac.errors import ConfigError, FencingError
from evac.fencing import read_secret_file


class FenceAgentProcess:
    def __init__(self, host: str, options: Mapping[str, Any]) -> None:
        agent = options.get("agent")
        if not agent:
            raise ConfigError(f"{host}: fence method agent needs 'agent' (e.g. fence_ipmilan)")
        path = shutil.which(str(agent)) or shutil.which(str(agent), path="/usr/sbin:/sbin")
        if path is None:
            raise FencingError(f"{host}: fence agent '{agent}' is not installed (apt-get install fence-agents)")
        self.host = host
        self.path = path
        self.timeout = float(options.get("timeout", 60))
        self.options = {k: v for k, v in options.items() if k not in ("agent", "timeout", "password_file")}
        if options.get("password_file"):
            self.options["password"] = read_secret_file(host, "agent", str(options["password_file"]))

    def _run(self, action: str) -> subprocess.CompletedProcess[str]:
        lines = [f"action={action}"] + [f"{k}={v}" for k, v in self.options.items()]
        try:
            return subprocess.run(
                [self.path], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=self.timeout
            )
        except subprocess.TimeoutExpired:
            raise FencingError(f"{self.host}: {self.path} action={action} timed out after {self.timeout:g} s") from None

    def power_off(self) -> None:
        proc = self._run("off")
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise FencingError(
                f"{self.host}: {self.path} action=off exited {proc.returncode}: {detail[-1] if detail else ''}"
            )

    def power_state(self) -> str:
        return {0: "on", 2: "off"}.get(self._run("status").returncode, "unknown")


@hookimpl
def evac_fence_methods() -> list[FenceMethod]:
    return [
        FenceMethod(
            "agent",
            lambda host, settings: FenceAgentProcess(host.name, settings),
            description="Any fence-agents agent (fence_ipmilan, fence_apc_snmp, ...) through its stdin protocol.",
            required=("agent",),
            optional=None,  # every other setting is passed to the agent as is
        )
    ]
