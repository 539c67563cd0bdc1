"""``evac agent`` on lab hosts, each feeding the lab's watchdog for its host.

An agent runs inside its host's namespaces (powering the host off kills it, as a crash
of the machine would); its watchdog daemon runs outside them (``evac.lab.watchdog``),
so the watchdog outlives the host it resets, and the agent feeds it through a FIFO on
the filesystem, never through the host's network: ``cut`` stops the feeding only
through the agent's own decision. The agents read the replicas' config file
(``serve_config``), whose ``agent:`` section the lab writes once agents are wanted.
"""

from __future__ import annotations

import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .layout import LabError
from .processes import alive, signal_pids
from .replicas import ServeReplicas
from .watchdog import LabWatchdogs

AGENT_PORT = 7480
# Lab timings: a cut host is counted fenced 3 + 3 + 2 = 8 s after its last renewal.
AGENT_SETTINGS: dict[str, Any] = {"lease_ttl": 3, "margin": 2.0, "reset": 0.5, "peer_timeout": 0.5}
WATCHDOG_TIMEOUT = 3.0


class LabAgents(ServeReplicas, LabWatchdogs):
    """Start, find, stop and kill the hosts' agents."""

    @property
    def agent_secret_file(self) -> Path:
        return self.root / "agent.secret"

    def has_agents(self) -> bool:
        return self.agent_secret_file.exists()

    def serve_config(self, name: str, *, file: str = "evac.yaml", **overrides: Any) -> Path:
        """The replicas' config, with the ``agent:`` section once the lab has agents: the
        leader's ``watchdog`` fence method reads the same timings the agents run by."""
        if self.has_agents() and "agent" not in overrides:
            overrides["agent"] = self.agent_section()
        return super().serve_config(name, file=file, **overrides)

    def agent_section(self) -> dict[str, Any]:
        """The ``agent:`` section of the lab's configs (the shared key made on first use)."""
        if not self.agent_secret_file.exists():
            self.agent_secret_file.write_text(secrets.token_hex(32) + "\n")
            self.agent_secret_file.chmod(0o600)
        return {
            **AGENT_SETTINGS,
            "port": AGENT_PORT,
            "secret": f"file:{self.agent_secret_file}",
            "watchdog": {"method": "lab", "lab_dir": str(self.root), "timeout": WATCHDOG_TIMEOUT},
        }

    def start_agent(self, name: str, config: Path | None = None, wait: float = 30.0) -> Path:
        """The host's watchdog daemon, then ``evac agent`` inside the host (log:
        ``<host dir>/log/agent.log``); returns once its watchdog is armed."""
        h = self.host(name)
        if config is None:
            self.agent_section()  # the shared key first: the config then has the section
            config = self.serve_config(name)
        self.start_watchdog(name)
        if self.agent_pids(name):
            return config
        log = self.host_dir(name) / "log" / "agent.log"
        armed_before = _armed_lines(log)
        argv = [sys.executable, "-m", "evac", "--config", str(config), "agent", "--host", name]
        self._spawn(h, argv, log)
        deadline = time.monotonic() + wait
        seen = False  # the process shows up once it entered the host's namespaces
        while _armed_lines(log) <= armed_before:
            if time.monotonic() > deadline:
                raise LabError(f"evac agent on {name} did not arm its watchdog within {wait:.0f} s (see {log})")
            running = bool(self.agent_pids(name))
            if seen and not running:
                raise LabError(f"evac agent on {name} exited (see {log})")
            seen = seen or running
            time.sleep(0.05)
        return config

    def agent_pids(self, name: str) -> list[int]:
        return self.evac_pids(name, "agent")

    def stop_agent(self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> None:
        """SIGTERM is ``systemctl stop``: the clean stop that disarms the watchdog.
        SIGKILL is a crash: the watchdog stays armed and resets the host."""
        pids = self.agent_pids(name)
        signal_pids(pids, sig)
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pids):
            if time.monotonic() > deadline:
                raise LabError(f"evac agent on {name} still runs {timeout:.0f} s after {sig.name}")
            time.sleep(0.05)

    def remove_agents(self) -> None:
        """Every agent stopped cleanly, every watchdog daemon stopped, the shared key gone:
        the lab's configs are written without an ``agent:`` section again."""
        for name in self.host_names():
            if self.agent_pids(name):
                self.stop_agent(name)
        self.stop_watchdogs()
        self.agent_secret_file.unlink(missing_ok=True)


def _armed_lines(log: Path) -> int:
    """How often the agent's log says it armed its watchdog and went running (its own word:
    the lab watchdog logs no new arming for a timer a killed agent left running)."""
    try:
        return log.read_text(errors="replace").count("armed, running")
    except OSError:
        return 0
