"""``evac.yaml``: one file for every command, validated with file:line errors.

This is the one place a config is loaded: ``evac serve``, ``evac slack``, ``evac status``
and every other command given the same file (``--config`` or ``$EVAC_CONFIG``) see the
same inventory, journal and settings. Without a file, the documented defaults apply and
:attr:`ServiceConfig.defaulted` names the ones used, so ``evac serve`` can log them.

Secrets are never inline: ``env:NAME`` or ``file:PATH`` (a relative path is taken from the
config file's directory, like ``inventory:`` and ``journal:``). Plugins validate their own
sections (``slack:``) through ``evac_config_sections``; any other unknown key is an error.

:func:`preflight` is what ``evac config check`` proves beyond loading: secret files exist
and only their owner can read them, the listen address can be bound, the journal's
directory is writable. (``evac config check`` also binds the ``drain:`` settings to the
drain runbook's parameters.)
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import re
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pluggy

from .errors import ConfigError
from .etcdclient import EtcdSettings, parse_url
from .inventory import FENCE_SECRET_FILES, Inventory, check_trusted_file
from .retention import Retention
from .selffence import Timings
from .yamldoc import Mapping, Sequence, Where, load_file, suggest

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
    "retention",
    "etcd",
    "agent",
)
SYSTEM_CONFIG = Path("/etc/evac/evac.yaml")
SYSTEM_INVENTORY = Path("/etc/evac/hosts.yaml")
DEFAULT_JOURNAL = Path("/var/lib/evac/journal.db")
LAB_DIR = Path("/tmp/evac-lab")  # where ``evac lab up`` puts the local lab, unless $EVAC_LAB_DIR says
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LISTEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")  # fullmatch: a host name to listen on


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
    rate_per_second: float = 10.0  # per source address; refused and unauthenticated requests count too
    burst: int = 20


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
    require_doctor: bool = True  # automatic fencing only of hosts whose last `evac doctor` passed


@dataclass(frozen=True)
class ClusterSettings:
    """``journal: etcd://…`` and the ``etcd:`` section: the replicated control plane.

    ``agree`` is how many live replicas must see a host dead before the leader fences
    it: ``majority`` (more than half of those that can reach etcd) or a number."""

    etcd: EtcdSettings
    agree: int | None = None  # None: a majority of the live replicas
    url: str = ""


@dataclass(frozen=True)
class AgentSettings:
    """The ``agent:`` section: what ``evac agent`` on every host, and the leader's
    ``watchdog`` fence method, agree on (docs/ha.md, "Hosts without a BMC")."""

    timings: Timings
    watchdog: dict[str, Any]  # {"method": "device", "device": "/dev/watchdog"}: a watchdog plugin's settings
    port: int = 7480  # the agents' own port, where peers ask each other about etcd
    secret: str = ""  # the agents' shared HMAC key: peers' answers are signed with it
    libvirt: str = ""  # the agent's own libvirt URI; empty: its host's inventory uri


@dataclass(frozen=True)
class ServiceConfig:
    source: str
    inventory: Path
    journal: Path
    cluster: ClusterSettings | None = None  # journal on etcd: several replicas, one leader
    agent: AgentSettings | None = None  # `evac agent` on the hosts: self-fencing by watchdog, guest restarts
    runbooks: RunbookNames = field(default_factory=RunbookNames)
    snapshots: SnapshotSettings = field(default_factory=SnapshotSettings)
    retention: Retention = field(default_factory=Retention)  # how long the journal keeps events and audit
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
    lines: dict[str, int] = field(default_factory=dict)  # line of a setting in the file: {"drain.concurrency": 40}

    def at(self, name: str) -> str:
        """``file:line: field`` for messages about a setting (``<defaults>: field`` without a file)."""
        line = self.lines.get(name)
        return f"{self.source}:{line}: {name}" if line else f"{self.source}: {name}"


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


def secret_path(value: str, source: str) -> Path:
    """The file a ``file:PATH`` secret names: a relative path is taken from the directory of
    the config file (``source``), like ``inventory:`` and ``journal:``, never from the
    current directory."""
    path = Path(value.removeprefix("file:"))
    return path if path.is_absolute() else Path(source).resolve().parent / path


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
    path = secret_path(value, where.source)
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise where.error(data.line_of(key), field_name, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise where.error(data.line_of(key), field_name, f"{path} is not UTF-8 text") from None


def load_config(path: Path | str, pm: pluggy.PluginManager) -> ServiceConfig:
    source = str(path)
    where = Where(source)
    check_trusted_file(Path(path), "evac.yaml")  # it chooses the inventory, the runbooks and the secrets
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
    cluster = _cluster(where, data, base)
    journal = (None if cluster else path_of("journal")) or default_journal_path(inventory)
    books = _section(where, data, "runbooks", ("drain", "failover"))
    names = {key: where.require_str(books, key, f"runbooks.{key}", default) for key, default in RUNBOOKS.items()}
    for key, name in names.items():
        if not name:
            raise where.error(books.line_of(key), f"runbooks.{key}", "expected the name of a registered runbook")
    runbooks = RunbookNames(**names)
    keep = _section(where, data, "retention", ("events_days", "audit_days", "every"))
    retention = Retention(
        events_days=_seconds(where, keep, "events_days", Retention.events_days, "retention", "days"),
        audit_days=_seconds(where, keep, "audit_days", Retention.audit_days, "retention", "days"),
        every=_seconds(where, keep, "every", Retention.every, "retention"),
    )
    snaps = _section(where, data, "snapshots", ("every",))
    every = _number(where, snaps, "every", 5.0, "snapshots")
    if every <= 0:
        raise where.error(snaps.line_of("every"), "snapshots.every", f"expected seconds > 0, got {every!r}")

    listen = _section(where, data, "listen", ("address", "port", "metrics_token"))
    port = listen.get("port", 8080)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise where.error(
            listen.line_of("port"),
            "listen.port",
            f"expected a port number, got {port!r} (1-65535, or 0 for any free port)",
        )
    address = _listen_address(where, listen)
    hooks = _section(
        where,
        data,
        "webhooks",
        ("token", "hmac_secret", "max_body_kib", "host_label", "alertnames", "rate_per_second", "burst"),
    )
    max_kib = _number(where, hooks, "max_body_kib", 256, "webhooks", whole=True)
    if max_kib < 1:
        raise where.error(hooks.line_of("max_body_kib"), "webhooks.max_body_kib", "expected a whole number >= 1 (KiB)")
    rate = _number(where, hooks, "rate_per_second", 10.0, "webhooks")
    burst = _number(where, hooks, "burst", 20, "webhooks", whole=True)
    for key, value in (("rate_per_second", rate), ("burst", burst)):
        if not 0 < value < float("inf"):
            raise where.error(hooks.line_of(key), f"webhooks.{key}", f"expected a number > 0, got {value!r}")
    alertnames = hooks.get("alertnames", [])
    if not isinstance(alertnames, list) or not all(isinstance(a, str) for a in alertnames):
        raise where.error(hooks.line_of("alertnames"), "webhooks.alertnames", "expected a list of alert names")
    webhooks = WebhookSettings(
        token=resolve_secret(where, hooks, "token", "webhooks.token"),
        hmac_secret=resolve_secret(where, hooks, "hmac_secret", "webhooks.hmac_secret"),
        max_body_bytes=int(max_kib) * 1024,
        host_label=where.require_str(hooks, "host_label", "webhooks.host_label", "instance"),
        alertnames=tuple(alertnames),
        rate_per_second=rate,
        burst=int(burst),
    )
    mon = _section(
        where,
        data,
        "monitor",
        (
            "enabled",
            "failover",
            "interval",
            "probe_timeout",
            "confirm_misses",
            "max_down",
            "max_fraction",
            "window",
            "require_doctor",
        ),
    )
    monitor = MonitorConfig(
        enabled=_flag(where, mon, "enabled", True, "monitor"),
        require_doctor=_flag(where, mon, "require_doctor", True, "monitor"),
        failover=_flag(where, mon, "failover", True, "monitor"),
        interval=_seconds(where, mon, "interval", 0.5, "monitor"),
        probe_timeout=_seconds(where, mon, "probe_timeout", 1.0, "monitor"),
        confirm_misses=int(_number(where, mon, "confirm_misses", 2, "monitor", whole=True)),
        max_down=int(_number(where, mon, "max_down", 1, "monitor", whole=True)),
        max_fraction=_number(where, mon, "max_fraction", 0.2, "monitor"),
        window=_seconds(where, mon, "window", 120, "monitor"),
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
    log_level = where.require_str(logging_, "level", "logging.level", "info")
    if log_level.lower() not in LOG_LEVELS:
        raise where.error(
            logging_.line_of("level"),
            "logging.level",
            f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}{suggest(log_level.lower(), LOG_LEVELS)}",
        )
    sections = {name: parse(data.get(name), source) for name, parse in plugin_sections.items() if name in data}
    agent = _agent(where, data, cluster)
    return ServiceConfig(
        source=source,
        inventory=inventory,
        journal=journal,
        cluster=cluster,
        agent=agent,
        runbooks=runbooks,
        snapshots=SnapshotSettings(every=every),
        retention=retention,
        address=address,
        port=port,
        metrics_token=resolve_secret(where, listen, "metrics_token", "listen.metrics_token"),
        webhooks=webhooks,
        monitor=monitor,
        drain_params=dict(drain),
        shutdown_in_flight=str(in_flight),
        shutdown_grace=_number(where, shutdown, "grace", 120, "shutdown"),
        log_format=str(log_format),
        log_level=log_level.lower(),
        sections=sections,
        defaulted=tuple(
            f"{key} {value}" for key, value in (("inventory", inventory), ("journal", journal)) if key not in data
        ),
        lines={
            **{key: data.line_of(key) for key in ("inventory", "journal") if key in data},
            **{f"listen.{key}": listen.line_of(key) for key in ("address", "port") if key in listen},
            **{f"drain.{key}": drain.line_of(key) for key in drain},
            "runbooks.drain": books.line_of("drain") if "drain" in books else data.line_of("runbooks"),
        },
    )


ETCD_KEYS = ("ca", "cert", "key", "lease_ttl", "prefix", "timeout", "agree")


def _cluster(where: Where, data: Mapping, base: Path) -> ClusterSettings | None:
    """The etcd settings when ``journal:`` is an ``etcd://`` URL; an ``etcd:`` section
    without one is a mistake worth naming."""
    url = data.get("journal")
    section = _section(where, data, "etcd", ETCD_KEYS)
    if not (isinstance(url, str) and url.startswith("etcd://")):
        if "etcd" in data:
            raise where.error(
                data.line_of("etcd"), "etcd", "the etcd: section needs journal: etcd://HOST:PORT,… to be used"
            )
        return None
    files: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key"):
        value = section.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise where.error(section.line_of(key), f"etcd.{key}", "expected a path to a PEM file")
        files[key] = None if value is None else (Path(value) if value.startswith("/") else base / value)
    if (files["cert"] is None) != (files["key"] is None):
        missing = "key" if files["key"] is None else "cert"
        raise where.error(
            section.line_of("cert" if missing == "key" else "key"), f"etcd.{missing}", "cert and key go together"
        )
    try:
        endpoints = parse_url(url, tls=files["ca"] is not None)
    except ConfigError as exc:
        raise where.error(data.line_of("journal"), "journal", str(exc)) from None
    ttl = _number(where, section, "lease_ttl", 5, "etcd", whole=True)
    if not 2 <= ttl <= 300:
        raise where.error(section.line_of("lease_ttl"), "etcd.lease_ttl", f"expected 2 to 300 seconds, got {ttl!r}")
    timeout = _seconds(where, section, "timeout", 2.0, "etcd")
    prefix = where.require_str(section, "prefix", "etcd.prefix", "/evac/")
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise where.error(
            section.line_of("prefix"), "etcd.prefix", f"expected a key prefix like /evac/, got {prefix!r}"
        )
    agree = section.get("agree", "majority")
    if agree != "majority" and (not isinstance(agree, int) or isinstance(agree, bool) or agree < 1):
        raise where.error(
            section.line_of("agree"), "etcd.agree", f"expected majority or a number of replicas >= 1, got {agree!r}"
        )
    settings = EtcdSettings(
        endpoints=endpoints,
        ca=files["ca"],
        cert=files["cert"],
        key=files["key"],
        prefix=prefix,
        timeout=timeout,
        lease_ttl=int(ttl),
    )
    return ClusterSettings(settings, None if agree == "majority" else int(agree), url)


AGENT_KEYS = ("port", "secret", "lease_ttl", "margin", "peer_timeout", "reset", "watchdog", "libvirt")


def _agent(where: Where, data: Mapping, cluster: ClusterSettings | None) -> AgentSettings | None:
    """The ``agent:`` section; its timings must make the watchdog a fence (``Timings.problem``)."""
    if "agent" not in data:
        return None
    section = _section(where, data, "agent", AGENT_KEYS)
    if cluster is None:
        raise where.error(data.line_of("agent"), "agent", "agents hold leases in etcd: set journal: etcd://HOST:PORT,…")
    port = section.get("port", 7480)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise where.error(section.line_of("port"), "agent.port", f"expected a port number 1-65535, got {port!r}")
    secret = resolve_secret(where, section, "secret", "agent.secret")
    if not secret:
        raise where.error(
            data.line_of("agent"), "agent.secret", "required: the agents' shared key, as env:NAME or file:PATH"
        )
    dog = where.require_mapping(section.get("watchdog", Mapping()), section.line_of("watchdog"), "agent.watchdog")
    method = dog.get("method")
    if not isinstance(method, str) or not method:
        raise where.error(
            section.line_of("watchdog"), "agent.watchdog.method", "required: a watchdog plugin, like device"
        )
    timeout = _seconds(where, dog, "timeout", 10.0, "agent.watchdog")
    ttl = _number(where, section, "lease_ttl", 3, "agent", whole=True)
    if not 2 <= ttl <= 300:
        raise where.error(section.line_of("lease_ttl"), "agent.lease_ttl", f"expected 2 to 300 seconds, got {ttl!r}")
    timings = Timings(
        lease_ttl=ttl,
        watchdog_timeout=timeout,
        margin=_seconds(where, section, "margin", 3.0, "agent"),
        peer_timeout=_seconds(where, section, "peer_timeout", 0.5, "agent"),
        reset=_number(where, section, "reset", 1.0, "agent"),
    )
    problem = timings.problem()
    if problem:
        setting, why = problem
        line = dog.line_of("timeout") if setting == "watchdog.timeout" else section.line_of("margin")
        raise where.error(
            line or data.line_of("agent"), f"agent.{setting}", f"{why}; worst case {timings.worst_case():.1f} s"
        )
    libvirt = where.require_str(section, "libvirt", "agent.libvirt", "")
    settings = {str(k): v for k, v in dog.items() if k != "timeout"}
    return AgentSettings(timings, settings, int(port), secret, str(libvirt))


def _listen_address(where: Where, listen: Mapping) -> str:
    address = where.require_str(listen, "address", "listen.address", "127.0.0.1")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not LISTEN_NAME.fullmatch(address):
            raise where.error(
                listen.line_of("address"),
                "listen.address",
                f"expected an IP address or host name to listen on, like 127.0.0.1 or 0.0.0.0, got {address!r}",
            ) from None
    return address


def _section(where: Where, data: Mapping, key: str, allowed: tuple[str, ...]) -> Mapping:
    section = where.require_mapping(data.get(key, Mapping()), data.line_of(key), key)
    where.reject_unknown(section, allowed, f"{key}.")
    return section


def _number(where: Where, data: Mapping, key: str, default: float, prefix: str, whole: bool = False) -> float:
    value = data.get(key, default)
    ok = isinstance(value, int) if whole else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        kind = "a whole number" if whole else "a number"
        raise where.error(data.line_of(key), f"{prefix}.{key}", f"expected {kind} >= 0, got {value!r}")
    return float(value)


def _seconds(where: Where, data: Mapping, key: str, default: float, prefix: str, unit: str = "seconds") -> float:
    """A finite duration > 0 (an interval or a timeout: 0 would spin or never wait)."""
    value = _number(where, data, key, default, prefix)
    if value <= 0:
        raise where.error(data.line_of(key), f"{prefix}.{key}", f"expected {unit} > 0, got {data.get(key)!r}")
    return value


def _flag(where: Where, data: Mapping, key: str, default: bool, prefix: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise where.error(data.line_of(key), f"{prefix}.{key}", f"expected true or false, got {value!r}")
    return value


# ---------------------------------------------------------------- what `evac config check` proves


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`preflight`, a one-line message naming file:line and field.

    ``error`` fails the check; ``insecure`` (a secret others can read, an inline fence
    password) fails it unless ``--allow-insecure``; ``warning`` is only said.
    """

    message: str
    kind: str = "error"  # error, insecure or warning


INLINE_PASSWORDS = ("password", "passwd")


def preflight(config: ServiceConfig, inventory: Inventory) -> list[Problem]:
    """Everything about the machine that would fail after start, found now; nothing is
    created or changed. Loading the config and the inventory (with the registered fence
    methods) has checked the files; ``evac config check`` also binds ``drain:`` to the
    drain runbook's parameters.
    """
    return [
        *config_secret_problems(config),
        *inventory_secret_problems(inventory),
        *listen_problems(config),
        *journal_problems(config),
    ]


def config_secret_problems(config: ServiceConfig) -> list[Problem]:
    """Every ``file:`` secret in the config (plugins' sections too): it exists, is a
    readable file, and neither its group nor others can read it."""
    if not Path(config.source).is_file():
        return []
    problems = []
    for line, name, value in _file_values(load_file(config.source), ""):
        problem = secret_file_problem(f"{config.source}:{line}: {name}", secret_path(value, config.source))
        if problem is not None:
            problems.append(problem)
    return problems


def inventory_secret_problems(inventory: Inventory) -> list[Problem]:
    """The inventory's secret files (fence ``password_file``/``identity_file``, ``ssh.key``)
    checked like the config's, and inline fence passwords flagged."""
    if not Path(inventory.source).is_file():
        return []
    data = load_file(inventory.source)
    base = Path(inventory.source).parent
    hosts = data.get("hosts") if isinstance(data, Mapping) else None
    problems = []
    for index, host in enumerate(hosts if isinstance(hosts, Sequence) else []):
        if not isinstance(host, Mapping):
            continue
        files: list[tuple[Mapping, str, str]] = []
        ssh = host.get("ssh")
        if isinstance(ssh, Mapping) and isinstance(ssh.get("key"), str):
            files.append((ssh, "key", f"hosts[{index}].ssh.key"))
        fence = host.get("fence")
        for number, entry in enumerate(fence if isinstance(fence, Sequence) else []):
            if not isinstance(entry, Mapping):
                continue
            field_ = f"hosts[{index}].fence[{number}]"
            files += [(entry, key, f"{field_}.{key}") for key in FENCE_SECRET_FILES if isinstance(entry.get(key), str)]
            for key in INLINE_PASSWORDS:
                if key in entry:
                    problems.append(
                        Problem(
                            f"{inventory.source}:{entry.line_of(key)}: {field_}.{key}: an inline password; keep it in "
                            "a file only evac reads: password_file: /etc/evac/NAME (chmod 600) "
                            "(or pass --allow-insecure)",
                            "insecure",
                        )
                    )
        for mapping, key, name in files:
            value = Path(mapping[key])
            path = value if value.is_absolute() else base / value
            problem = secret_file_problem(f"{inventory.source}:{mapping.line_of(key)}: {name}", path)
            if problem is not None:
                problems.append(problem)
    return problems


def secret_file_problem(label: str, path: Path) -> Problem | None:
    """None when ``path`` is a file evac can read and its group and others cannot."""
    try:
        info = path.stat()
    except OSError as exc:
        return Problem(f"{label}: cannot read {path}: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return Problem(f"{label}: {path} is not a file")
    if not os.access(path, os.R_OK):
        return Problem(f"{label}: {path} is not readable by uid {os.geteuid()}; fix: chown it to the user evac runs as")
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "others" if mode & stat.S_IROTH else "its group"
        return Problem(
            f"{label}: {path} is readable by {who} (mode {mode:04o}); fix: chmod 600 {path} (or pass --allow-insecure)",
            "insecure",
        )
    return None


def _file_values(data: Any, name: str) -> Iterator[tuple[int, str, str]]:
    """(line, field, value) for every ``file:`` string in a loaded YAML document."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            child = f"{name}.{key}" if name else key
            if isinstance(value, str) and value.startswith("file:"):
                yield data.line_of(key), child, value
            else:
                yield from _file_values(value, child)
    elif isinstance(data, Sequence):
        for index, value in enumerate(data):
            if isinstance(value, str) and value.startswith("file:"):
                yield data.line_of(index), f"{name}[{index}]", value
            else:
                yield from _file_values(value, f"{name}[{index}]")


def listen_problems(config: ServiceConfig) -> list[Problem]:
    """The listen address can be bound (port 0: any free port). A port already in use is
    only a warning: it may be the running ``evac serve`` this config is meant to replace."""
    try:
        found = socket.getaddrinfo(config.address, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        return [Problem(f"{config.at('listen.address')}: cannot resolve {config.address!r}: {reason}")]
    family, kind, proto, _, sockaddr = found[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            where = f"{config.address}:{config.port}"
            if exc.errno == errno.EADDRINUSE:
                return [Problem(f"{config.at('listen.port')}: {where} is in use (by a running evac serve?)", "warning")]
            if exc.errno == errno.EACCES:
                return [
                    Problem(
                        f"{config.at('listen.port')}: cannot bind {where}: {exc.strerror}; ports below 1024 need "
                        "root or CAP_NET_BIND_SERVICE: pick a port such as 8080"
                    )
                ]
            return [
                Problem(
                    f"{config.at('listen.address')}: cannot bind {where}: {exc.strerror}; "
                    "listen on an address of this machine (127.0.0.1, or 0.0.0.0 for all)"
                )
            ]
    return []


def journal_problems(config: ServiceConfig) -> list[Problem]:
    """The journal can be opened for writing: the file (if there) and its directory are
    writable, or the directory can be created. On etcd: its TLS files can be read."""
    if config.cluster is not None:
        etcd = config.cluster.etcd
        return [
            Problem(f"{config.at('journal')}: etcd.{key}: cannot read {path}; fix the path or its permissions")
            for key, path in (("ca", etcd.ca), ("cert", etcd.cert), ("key", etcd.key))
            if path is not None and not os.access(path, os.R_OK)
        ]
    path, label, me = config.journal, config.at("journal"), os.geteuid()
    fix = "set journal: to a writable path"
    if path.exists():
        if not path.is_file():
            return [Problem(f"{label}: {path} is not a file; {fix}")]
        if not os.access(path, os.R_OK | os.W_OK):
            return [Problem(f"{label}: {path} is not writable by uid {me}; fix: chown {me} {path}, or {fix}")]
        with path.open("rb") as journal:
            header = journal.read(16)
        if header and header != b"SQLite format 3\x00":
            return [
                Problem(
                    f"{label}: {path} is not a SQLite database; restore it from a backup, "
                    f"or move it away to start a new journal"
                )
            ]
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return [Problem(f"{label}: cannot create {path.parent}: {ancestor} is not a directory; {fix}")]
    if not os.access(ancestor, os.W_OK | os.X_OK):
        if ancestor == path.parent:
            return [
                Problem(
                    f"{label}: directory {ancestor} is not writable by uid {me}; fix: chown {me} {ancestor}, or {fix}"
                )
            ]
        return [
            Problem(
                f"{label}: cannot create {path.parent}: {ancestor} is not writable by uid {me}; "
                f"fix: install -d -o {me} {path.parent}, or {fix}"
            )
        ]
    return []
