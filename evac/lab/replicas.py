"""``evac serve`` replicas running inside lab hosts, sharing the lab's etcd cluster.

A replica is spawned in its host's namespaces, so powering the host off kills it the
way a crash of that machine would, and ``socket.gethostname()`` in it is the host's
name. It is a test's process, not a host daemon: ``start_host`` does not restart it.
The root namespace reaches it at the host's address through the lab bridge.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .etcd import EtcdCluster
from .layout import LabError
from .processes import alive, signal_pids
from .provisioning import write_inventory

SERVE_PORT = 8080
LEASE_TTL = 3  # seconds: a dead replica's leadership passes on quickly in tests


class ServeReplicas(EtcdCluster):
    """Write a replica's ``evac.yaml``, start it, find it, stop it."""

    def serve_config(self, name: str, *, file: str = "evac.yaml", **overrides: Any) -> Path:
        """``<host dir>/<file>`` for a replica on host ``name``: the lab's inventory, the
        etcd journal with evac's client certificate, listening on the host's address.
        ``overrides`` are merged in, a mapping key by key (``etcd={"lease_ttl": 5}``); a
        variant kept beside the default one gets a ``file`` name of its own."""
        h = self.host(name)
        ca, cert, key = self.etcd_tls()
        data: dict[str, Any] = {
            "inventory": str(self.inventory_file),
            "journal": self.etcd_url(),
            "etcd": {"ca": str(ca), "cert": str(cert), "key": str(key), "lease_ttl": LEASE_TTL},
            "listen": {"address": h.address, "port": SERVE_PORT},
        }
        _merge(data, overrides)
        path = self.host_dir(name) / file
        (self.root / "hosts").chmod(0o755)  # evac refuses a config in a directory others can write
        write_inventory(path, yaml.safe_dump(data, sort_keys=False))
        return path

    def serve(self, name: str, config: Path | None = None) -> Path:
        """Start ``evac serve`` inside host ``name`` (log: ``<host dir>/log/serve.log``);
        returns the config it runs with. It waits until the process exists (so
        ``serve_pids`` sees it), not until it answers."""
        h = self.host(name)
        config = config or self.serve_config(name)
        before = set(self.serve_pids(name))
        argv = [sys.executable, "-m", "evac", "--config", str(config), "serve"]
        self._spawn(h, argv, self.host_dir(name) / "log" / "serve.log")
        deadline = time.monotonic() + 10
        while not set(self.serve_pids(name)) - before:
            if time.monotonic() > deadline:
                raise LabError(f"evac serve did not start in {name} within 10 s (see its serve.log)")
            time.sleep(0.02)
        return config

    def serve_pids(self, name: str) -> list[int]:
        """The host's ``evac serve`` processes (not their reapers)."""
        return self.evac_pids(name, "serve")

    def stop_serve(self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> None:
        """Signal the host's replicas; for SIGTERM, SIGINT and SIGKILL wait until they are gone
        (another signal, SIGSTOP say, returns at once)."""
        pids = self.serve_pids(name)
        signal_pids(pids, sig)
        if sig not in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            return
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pids):
            if time.monotonic() > deadline:
                raise LabError(f"evac serve on {name} still runs {timeout:.0f} s after {sig.name}")
            time.sleep(0.05)

    def serve_url(self, name: str) -> str:
        """Where the host's replica listens (its config's port, else 8080)."""
        h = self.host(name)
        port = SERVE_PORT
        path = self.host_dir(name) / "evac.yaml"
        if path.exists():
            listen = (yaml.safe_load(path.read_text()) or {}).get("listen") or {}
            port = int(listen.get("port", SERVE_PORT))
        return f"http://{h.address}:{port}"


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
