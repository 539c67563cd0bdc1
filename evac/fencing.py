"""Fencing: power a host off through its chain of methods and confirm it is off.

Nothing a dead host ran may start elsewhere until it is fenced: this module is the only
way evac declares a host fenced. Each method in the host's inventory ``fence:`` list is
tried in order (e.g. redfish, then a PDU, then ssh); a method counts only when the power
is read back as off afterwards, since some agents report success before the node is off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import pluggy

from .errors import EvacError, FencingError
from .inventory import FenceSpec, HostSpec


class FenceAgent(Protocol):
    def power_off(self) -> None:
        """Switch the host off hard (no graceful shutdown)."""
        ...

    def power_state(self) -> str:
        """``on``, ``off`` or ``unknown``."""
        ...


@dataclass(frozen=True)
class FenceAttempt:
    method: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class FenceResult:
    host: str
    method: str
    seconds: float
    attempts: tuple[FenceAttempt, ...] = field(default_factory=tuple)


def agent_for(pm: pluggy.PluginManager, host: HostSpec, spec: FenceSpec) -> FenceAgent:
    agent: FenceAgent | None = pm.hook.evac_fence_agent(host=host, method=spec.method, options=spec.options)
    if agent is None:
        raise FencingError(f"{host.name}: no plugin provides fence method '{spec.method}'")
    return agent


def fence_host(
    pm: pluggy.PluginManager,
    host: HostSpec,
    confirm_timeout: float = 30.0,
    poll: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
) -> FenceResult:
    """Power ``host`` off by the first method that works and confirms; ``FencingError`` if none."""
    if not host.fence:
        raise FencingError(
            f"{host.name}: no fence methods configured; fence by hand, then `evac fence {host.name} --confirm-manually`"
        )
    started = time.monotonic()
    attempts: list[FenceAttempt] = []
    for spec in host.fence:
        t0 = time.monotonic()
        try:
            agent = agent_for(pm, host, spec)
            agent.power_off()
            deadline = time.monotonic() + confirm_timeout
            state = agent.power_state()
            while state != "off" and time.monotonic() < deadline:
                sleep(poll)
                state = agent.power_state()
            if state != "off":
                raise FencingError(f"power still '{state}' {confirm_timeout:g} s after power off")
        except EvacError as exc:
            attempts.append(FenceAttempt(spec.method, False, time.monotonic() - t0, str(exc)))
            continue
        except Exception as exc:  # a plugin's own bug must not stop the chain
            attempts.append(FenceAttempt(spec.method, False, time.monotonic() - t0, f"{type(exc).__name__}: {exc}"))
            continue
        attempts.append(FenceAttempt(spec.method, True, time.monotonic() - t0))
        return FenceResult(host.name, spec.method, time.monotonic() - started, tuple(attempts))
    tried = "; ".join(f"{a.method}: {a.detail}" for a in attempts)
    raise FencingError(
        f"{host.name}: every fence method failed ({tried}). Its guests are NOT restarted. "
        f"Power it off by hand, then run `evac fence {host.name} --confirm-manually`."
    )
