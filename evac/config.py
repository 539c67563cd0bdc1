"""``evac.yaml``: one file for every command, validated with file:line errors.

This is the one place a config is loaded: ``evac serve``, ``evac slack``, ``evac status``
and every other command given the same file (``--config`` or ``$EVAC_CONFIG``) see the
same inventory, journal and settings. Without a file, the documented defaults apply and
:attr:`ServiceConfig.defaulted` names the ones used, so ``evac serve`` can log them.

Secrets are never inline: ``env:NAME`` or ``file:PATH``. Plugins validate their own
sections (``slack:``) through ``evac_config_sections``; any other unknown key is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pluggy

from .yamldoc import Mapping, Where, load_file

TOP = (
    "inventory",
    "journal",
    "runbooks",
    "listen",
    "webhooks",
    "monitor",
    "snapshots",
    "drain",
    "shutdown",
    "logging",
)
SYSTEM_CONFIG = Path("/etc/evac/evac.yaml")
SYSTEM_INVENTORY = Path("/etc/evac/hosts.yaml")
DEFAULT_JOURNAL = Path("/var/lib/evac/journal.db")
LAB_DIR = Path("/tmp/evac-lab")  # where ``evac lab up`` puts the local lab, unless $EVAC_LAB_DIR says


def config_path(given: Path | None = None) -> Path | None:
    """``--config``, else ``$EVAC_CONFIG``, else ``/etc/evac/evac.yaml`` when it exists; else
    None: the defaults."""
    if given is not None:
        return given
    if os.environ.get("EVAC_CONFIG"):
        return Path(os.environ["EVAC_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def default_inventory_path() -> Path:
    """``$EVAC_INVENTORY``, else ``/etc/evac/hosts.yaml`` when it exists, else the local lab's."""
    if os.environ.get("EVAC_INVENTORY"):
        return Path(os.environ["EVAC_INVENTORY"])
    if SYSTEM_INVENTORY.exists():
        return SYSTEM_INVENTORY
    return Path(os.environ.get("EVAC_LAB_DIR") or LAB_DIR) / "hosts.yaml"


def default_journal_path(inventory: Path | None = None) -> Path:
    """``$EVAC_JOURNAL``; else the local lab's own journal when the inventory is the lab's
    (so ``evac lab down`` forgets a lab completely); else ``/var/lib/evac/journal.db``."""
    if os.environ.get("EVAC_JOURNAL"):
        return Path(os.environ["EVAC_JOURNAL"])
    if inventory is not None and inventory.name == "hosts.yaml" and (inventory.parent / "lab.json").exists():
        return inventory.parent / "journal.db"
    return DEFAULT_JOURNAL


RUNBOOKS = {"drain": "maintenance", "failover": "host-failure"}


@dataclass(frozen=True)
class RunbookNames:
    """Which registered runbooks drain and fail over a host: named in config, not in code."""

    drain: str = RUNBOOKS["drain"]
    failover: str = RUNBOOKS["failover"]


@dataclass(frozen=True)
class SnapshotSettings:
    """How often the service records what runs where (also on every libvirt lifecycle event)."""

    every: float = 5.0


@dataclass(frozen=True)
class WebhookSettings:
    token: str = ""
    hmac_secret: str = ""
    max_body_bytes: int = 256 * 1024
    host_label: str = "instance"
    alertnames: tuple[str, ...] = ()  # empty: every firing alert naming a host


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = True
    interval: float = 0.5
    probe_timeout: float = 1.0
    confirm_misses: int = 2
    max_down: int = 1
    max_fraction: float = 0.2
    window: float = 120.0
    failover: bool = True


@dataclass(frozen=True)
class ServiceConfig:
    source: str
    inventory: Path
    journal: Path
    runbooks: RunbookNames = field(default_factory=RunbookNames)
    snapshots: SnapshotSettings = field(default_factory=SnapshotSettings)
    address: str = "127.0.0.1"
    port: int = 8080
    metrics_token: str = ""  # when set, /metrics and /healthz details need it as a bearer token
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    drain_params: dict[str, Any] = field(default_factory=dict)
    shutdown_in_flight: str = "finish"  # finish or abort
    shutdown_grace: float = 120.0
    log_format: str = "text"
    log_level: str = "info"
    sections: dict[str, Any] = field(default_factory=dict)  # plugins' own sections, parsed
    defaulted: tuple[str, ...] = ()  # settings that came from defaults, not from the file


def default_config(inventory: Path | None = None, journal: Path | None = None) -> ServiceConfig:
    """The settings without a file: the default inventory and journal, everything else as
    documented in ``contrib/evac.yaml``."""
    inventory = inventory or default_inventory_path()
    journal = journal or default_journal_path(inventory)
    return ServiceConfig(
        source="<defaults>",
        inventory=inventory,
        journal=journal,
        defaulted=(
            f"inventory {inventory}",
            f"journal {journal}",
            "listen 127.0.0.1:8080",
            "webhooks off",
            "monitor on",
            "snapshots every 5 s",
        ),
    )


def settings(
    path: Path | None, pm: pluggy.PluginManager, inventory: Path | None = None, journal: Path | None = None
) -> ServiceConfig:
    """What every command runs on: the file (``config_path``) or the defaults, with the
    command line's ``--inventory`` and ``--journal`` over either."""
    found = config_path(path)
    if found is None:
        return default_config(inventory, journal)
    config = load_config(found, pm)
    if inventory is not None:
        config = replace(config, inventory=inventory)
    if journal is not None:
        config = replace(config, journal=journal)
    return config


def resolve_secret(where: Where, data: Mapping, key: str, field_name: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or not value.startswith(("env:", "file:")):
        raise where.error(data.line_of(key), field_name, "secrets are given as env:NAME or file:PATH, not inline")
    if value.startswith("env:"):
        found = os.environ.get(value[4:])
        if not found:
            raise where.error(data.line_of(key), field_name, f"environment variable {value[4:]} is not set")
        return found
    try:
        return Path(value[5:]).read_text().strip()
    except OSError as exc:
        raise where.error(data.line_of(key), field_name, f"cannot read {value[5:]}: {exc.strerror}") from None


def load_config(path: Path | str, pm: pluggy.PluginManager) -> ServiceConfig:
    source = str(path)
    where = Where(source)
    data = where.require_mapping(load_file(path), 1, "evac.yaml")
    plugin_sections: dict[str, Any] = {}
    for contributed in pm.hook.evac_config_sections():
        plugin_sections.update(contributed)
    where.reject_unknown(data, [*TOP, *plugin_sections], "")
    base = Path(source).resolve().parent

    def path_of(key: str) -> Path | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise where.error(data.line_of(key), key, "expected a path")
        return (base / value) if not value.startswith("/") else Path(value)

    inventory = path_of("inventory") or default_inventory_path()
    journal = path_of("journal") or default_journal_path(inventory)
    books = _section(where, data, "runbooks", ("drain", "failover"))
    names = {key: where.require_str(books, key, f"runbooks.{key}", default) for key, default in RUNBOOKS.items()}
    for key, name in names.items():
        if not name:
            raise where.error(books.line_of(key), f"runbooks.{key}", "expected the name of a registered runbook")
    runbooks = RunbookNames(**names)
    snaps = _section(where, data, "snapshots", ("every",))
    every = _number(where, snaps, "every", 5.0, "snapshots")
    if every <= 0:
        raise where.error(snaps.line_of("every"), "snapshots.every", f"expected seconds > 0, got {every!r}")

    listen = _section(where, data, "listen", ("address", "port", "metrics_token"))
    port = listen.get("port", 8080)
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise where.error(listen.line_of("port"), "listen.port", f"expected a port number, got {port!r}")
    hooks = _section(where, data, "webhooks", ("token", "hmac_secret", "max_body_kib", "host_label", "alertnames"))
    max_kib = _number(where, hooks, "max_body_kib", 256, "webhooks", whole=True)
    alertnames = hooks.get("alertnames", [])
    if not isinstance(alertnames, list) or not all(isinstance(a, str) for a in alertnames):
        raise where.error(hooks.line_of("alertnames"), "webhooks.alertnames", "expected a list of alert names")
    webhooks = WebhookSettings(
        token=resolve_secret(where, hooks, "token", "webhooks.token"),
        hmac_secret=resolve_secret(where, hooks, "hmac_secret", "webhooks.hmac_secret"),
        max_body_bytes=int(max_kib) * 1024,
        host_label=where.require_str(hooks, "host_label", "webhooks.host_label", "instance"),
        alertnames=tuple(alertnames),
    )
    mon = _section(
        where,
        data,
        "monitor",
        ("enabled", "failover", "interval", "probe_timeout", "confirm_misses", "max_down", "max_fraction", "window"),
    )
    monitor = MonitorConfig(
        enabled=_flag(where, mon, "enabled", True, "monitor"),
        failover=_flag(where, mon, "failover", True, "monitor"),
        interval=_number(where, mon, "interval", 0.5, "monitor"),
        probe_timeout=_number(where, mon, "probe_timeout", 1.0, "monitor"),
        confirm_misses=int(_number(where, mon, "confirm_misses", 2, "monitor", whole=True)),
        max_down=int(_number(where, mon, "max_down", 1, "monitor", whole=True)),
        max_fraction=_number(where, mon, "max_fraction", 0.2, "monitor"),
        window=_number(where, mon, "window", 120, "monitor"),
    )
    drain = _section(
        where,
        data,
        "drain",
        (
            "concurrency",
            "max_out",
            "max_in",
            "bandwidth_mib",
            "compression",
            "downtime_limit_ms",
            "allow_postcopy",
            "tls",
        ),
    )
    shutdown = _section(where, data, "shutdown", ("in_flight", "grace"))
    in_flight = where.require_str(shutdown, "in_flight", "shutdown.in_flight", "finish")
    if in_flight not in ("finish", "abort"):
        raise where.error(
            shutdown.line_of("in_flight"), "shutdown.in_flight", f"expected finish or abort, got {in_flight!r}"
        )
    logging_ = _section(where, data, "logging", ("format", "level"))
    log_format = where.require_str(logging_, "format", "logging.format", "text")
    if log_format not in ("text", "json"):
        raise where.error(logging_.line_of("format"), "logging.format", f"expected text or json, got {log_format!r}")
    sections = {name: parse(data.get(name), source) for name, parse in plugin_sections.items() if name in data}
    return ServiceConfig(
        source=source,
        inventory=inventory,
        journal=journal,
        runbooks=runbooks,
        snapshots=SnapshotSettings(every=every),
        address=where.require_str(listen, "address", "listen.address", "127.0.0.1"),
        port=port,
        metrics_token=resolve_secret(where, listen, "metrics_token", "listen.metrics_token"),
        webhooks=webhooks,
        monitor=monitor,
        drain_params=dict(drain),
        shutdown_in_flight=str(in_flight),
        shutdown_grace=_number(where, shutdown, "grace", 120, "shutdown"),
        log_format=str(log_format),
        log_level=where.require_str(logging_, "level", "logging.level", "info"),
        sections=sections,
        defaulted=tuple(
            f"{key} {value}" for key, value in (("inventory", inventory), ("journal", journal)) if key not in data
        ),
    )


def _section(where: Where, data: Mapping, key: str, allowed: tuple[str, ...]) -> Mapping:
    section = where.require_mapping(data.get(key, Mapping()), data.line_of(key), key)
    where.reject_unknown(section, allowed, f"{key}.")
    return section


def _number(where: Where, data: Mapping, key: str, default: float, prefix: str, whole: bool = False) -> float:
    value = data.get(key, default)
    ok = isinstance(value, int) if whole else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or value < 0:
        kind = "a whole number" if whole else "a number"
        raise where.error(data.line_of(key), f"{prefix}.{key}", f"expected {kind} >= 0, got {value!r}")
    return float(value)


def _flag(where: Where, data: Mapping, key: str, default: bool, prefix: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise where.error(data.line_of(key), f"{prefix}.{key}", f"expected true or false, got {value!r}")
    return value
