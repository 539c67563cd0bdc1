"""Is a host dead? A pure state machine over independent signals, so one lost signal is
never enough to fence a host.

Signals: ``libvirt`` (the monitor's connection: keepalive and close callback), ``probe``
(TCP to the host's libvirt or SSH port: any answer counts, so a crashed libvirtd on a
live host is not a dead host) and ``power`` (the BMC's view, where one is configured).

- ``up``: every signal fine.
- ``suspect``: one signal lost.
- ``down``: the BMC says off; or the libvirt connection is lost and the probe has
  missed ``confirm_misses`` times in a row since.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HostHealth:
    host: str
    confirm_misses: int = 2
    state: str = "up"
    reason: str = ""
    libvirt_ok: bool = True
    probe_misses: int = 0
    power: str = "unknown"  # on, off, unknown
    since: float = 0.0
    history: list[tuple[float, str, str]] = field(default_factory=list)

    def observe(self, signal: str, ok: bool, now: float, detail: str = "") -> str | None:
        """Record one observation; returns the new state when it changed."""
        if signal == "libvirt":
            self.libvirt_ok = ok
        elif signal == "probe":
            self.probe_misses = 0 if ok else self.probe_misses + 1
        elif signal == "power":
            self.power = "on" if ok else "off"
        else:
            raise ValueError(f"unknown signal {signal!r}")
        state, reason = self._judge(detail)
        if state == self.state:
            return None
        self.state, self.reason, self.since = state, reason, now
        self.history.append((now, state, reason))
        return state

    def _judge(self, detail: str) -> tuple[str, str]:
        if self.power == "off":
            return "down", "power is off (BMC)"
        if not self.libvirt_ok and self.probe_misses >= self.confirm_misses:
            return "down", f"libvirt connection lost and {self.probe_misses} probes missed"
        if not self.libvirt_ok:
            return "suspect", f"libvirt connection lost{': ' + detail if detail else ''}"
        if self.probe_misses:
            return "suspect", f"{self.probe_misses} probe(s) missed"
        return "up", ""
