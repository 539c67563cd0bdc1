"""``evac.yaml``: one file for the service, validated with file:line errors.

Secrets are never inline: ``env:NAME`` or ``file:PATH``. Plugins validate their own
sections (``slack:``) through ``evac_config_sections``; any other unknown key is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from .yamldoc import Mapping, Where, load_file

TOP = ("inventory", "journal", "listen", "webhooks", "monitor", "drain", "shutdown", "logging")


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

    def path_of(key: str, default: str) -> Path:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise where.error(data.line_of(key), key, "expected a path")
        return (base / value) if not value.startswith("/") else Path(value)

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
        host_label=str(hooks.get("host_label", "instance")),
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
    in_flight = shutdown.get("in_flight", "finish")
    if in_flight not in ("finish", "abort"):
        raise where.error(
            shutdown.line_of("in_flight"), "shutdown.in_flight", f"expected finish or abort, got {in_flight!r}"
        )
    logging_ = _section(where, data, "logging", ("format", "level"))
    log_format = logging_.get("format", "text")
    if log_format not in ("text", "json"):
        raise where.error(logging_.line_of("format"), "logging.format", f"expected text or json, got {log_format!r}")
    sections = {name: parse(data.get(name), source) for name, parse in plugin_sections.items() if name in data}
    return ServiceConfig(
        source=source,
        inventory=path_of("inventory", "/etc/evac/hosts.yaml"),
        journal=path_of("journal", "/var/lib/evac/journal.db"),
        address=str(listen.get("address", "127.0.0.1")),
        port=port,
        metrics_token=resolve_secret(where, listen, "metrics_token", "listen.metrics_token"),
        webhooks=webhooks,
        monitor=monitor,
        drain_params=dict(drain),
        shutdown_in_flight=str(in_flight),
        shutdown_grace=_number(where, shutdown, "grace", 120, "shutdown"),
        log_format=str(log_format),
        log_level=str(logging_.get("level", "info")),
        sections=sections,
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
