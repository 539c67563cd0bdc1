"""The Slack bot's settings: tokens from the environment (or files), never from YAML text,
and per-command access lists of Slack user IDs, user-group IDs and channel IDs; ``run``
has one list per runbook (``slack.acl.run.runbooks.NAME``), so granting one runbook
grants no other."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from evac.config import secret_path
from evac.errors import ConfigError
from evac.yamldoc import Mapping, Where, suggest

COMMANDS = (
    "evacuate",
    "status",
    "cancel",
    "hosts",
    "help",
    "fence",
    "approve",
    "brake",
    "doctor",
    "run",
    "return",
    "rebalance",
    "ha",
)
READ_ONLY = ("status", "hosts", "help")
RULE_KEYS = ("users", "groups", "channels")


@dataclass(frozen=True)
class Rule:
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()  # empty: any channel
    at: str = field(default="", compare=False)  # where it is written (``evac.yaml:12``), for errors found later


@dataclass(frozen=True)
class SlackConfig:
    bot_token: str = ""
    app_token: str = ""  # Socket Mode
    signing_secret: str = ""  # HTTP mode
    mode: str = "socket"  # socket or http
    port: int = 3000
    alerts_channel: str = ""
    acl: dict[str, Rule] = field(default_factory=dict)
    runbook_acl: dict[str, Rule] = field(default_factory=dict)  # runbook -> who may `/evac run` it
    api_url: str = ""  # Slack's Web API base URL; set only for a proxy (or a test double)
    group_cache_seconds: float = 300.0  # how long user-group membership is trusted before asking again
    preview_seconds: float = 900.0  # how long a drain preview can be confirmed


def secret(where: Where, data: Mapping, key: str, env: str) -> str:
    """A secret from ``file:PATH`` (relative to the config file, as ``config check`` reads
    it) or ``env:NAME``, else the environment variable ``env``; the value is never logged."""
    value = data.get(key)
    if isinstance(value, str) and value.startswith("file:"):
        path = secret_path(value, where.source)
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise where.error(data.line_of(key), f"slack.{key}", f"cannot read {path}: {exc.strerror}") from None
    if isinstance(value, str) and value.startswith("env:"):
        return os.environ.get(value[4:], "")
    return os.environ.get(env, "")


def parse_slack(data: Mapping | None, source: str) -> SlackConfig:
    """The ``slack:`` section of evac.yaml (tokens only as ``env:NAME`` or ``file:PATH``)."""
    where = Where(source)
    data = where.require_mapping(data if data is not None else Mapping(), getattr(data, "line", 0), "slack")
    where.reject_unknown(
        data,
        (
            "bot_token",
            "app_token",
            "signing_secret",
            "mode",
            "port",
            "alerts_channel",
            "acl",
            "api_url",
            "group_cache_seconds",
            "preview_seconds",
        ),
        "slack.",
    )
    for key in ("bot_token", "app_token", "signing_secret"):
        # Not require_str: its message would quote the value, and this one may be a secret.
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and value.startswith(("env:", "file:"))):
            raise where.error(
                data.line_of(key), f"slack.{key}", "secrets are given as env:NAME or file:PATH, not inline"
            )
    mode = where.require_str(data, "mode", "slack.mode", "socket")
    if mode not in ("socket", "http"):
        raise where.error(data.line_of("mode"), "slack.mode", f"expected socket or http, got {mode!r}")
    port = data.get("port", 3000)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise where.error(data.line_of("port"), "slack.port", f"expected a TCP port (0-65535), got {port!r}")
    cache = _seconds(where, data, "group_cache_seconds", 300, "seconds >= 0 (0: ask Slack on every check)")
    previews = _seconds(where, data, "preview_seconds", 900, "seconds > 0 (how long a preview can be confirmed)", True)
    acl: dict[str, Rule] = {}
    runbook_acl: dict[str, Rule] = {}
    rules = where.require_mapping(data.get("acl", Mapping()), data.line_of("acl"), "slack.acl")
    for command, raw in rules.items():
        if command not in COMMANDS:
            raise where.error(
                rules.line_of(command),
                f"slack.acl.{command}",
                f"unknown command{suggest(str(command), COMMANDS)}; expected one of {', '.join(COMMANDS)}",
            )
        if command == "run":
            runbook_acl = _runbook_rules(where, raw, rules.line_of(command))
        else:
            acl[command] = _rule(where, raw, rules.line_of(command), f"slack.acl.{command}")
    return SlackConfig(
        bot_token=secret(where, data, "bot_token", "SLACK_BOT_TOKEN"),
        app_token=secret(where, data, "app_token", "SLACK_APP_TOKEN"),
        signing_secret=secret(where, data, "signing_secret", "SLACK_SIGNING_SECRET"),
        mode=mode,
        port=port,
        alerts_channel=where.require_str(data, "alerts_channel", "slack.alerts_channel", ""),
        acl=acl,
        runbook_acl=runbook_acl,
        api_url=where.require_str(data, "api_url", "slack.api_url", ""),
        group_cache_seconds=cache,
        preview_seconds=previews,
    )


def _rule(where: Where, raw: object, line: int, label: str) -> Rule:
    """One access rule: lists of Slack IDs under ``users``, ``groups`` and ``channels``."""
    rule = where.require_mapping(raw, line, label)
    where.reject_unknown(rule, RULE_KEYS, f"{label}.")
    for key in RULE_KEYS:
        ids = rule.get(key, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) and i.startswith(tuple("UWSCGD")) for i in ids):
            expected = "expected a list of Slack IDs (U…, S…, C…), never names"
            raise where.error(rule.line_of(key), f"{label}.{key}", expected)
    return Rule(
        frozenset(rule.get("users", [])),
        frozenset(rule.get("groups", [])),
        frozenset(rule.get("channels", [])),
        at=f"{where.source}:{line}",
    )


def _runbook_rules(where: Where, raw: object, line: int) -> dict[str, Rule]:
    """``slack.acl.run``: ``runbooks: {NAME: rule}``, one rule per runbook. A rule for all
    runbooks at once is refused: a runbook added later would be open without anyone saying so."""
    run = where.require_mapping(raw, line, "slack.acl.run")
    if set(run) & set(RULE_KEYS):
        key = next(k for k in run if k in RULE_KEYS)
        raise where.error(
            run.line_of(key),
            f"slack.acl.run.{key}",
            "each runbook has its own rule: runbooks: {NAME: {users: [...], groups: [...], channels: [...]}}",
        )
    where.reject_unknown(run, ("runbooks",), "slack.acl.run.")
    books = where.require_mapping(run.get("runbooks", Mapping()), run.line_of("runbooks"), "slack.acl.run.runbooks")
    found: dict[str, Rule] = {}
    for name, rule in books.items():
        if not isinstance(name, str) or not name.strip():
            raise where.error(books.line_of(name), "slack.acl.run.runbooks", f"expected a runbook name, got {name!r}")
        found[name] = _rule(where, rule, books.line_of(name), f"slack.acl.run.runbooks.{name}")
    return found


def check_runbooks(config: SlackConfig, registered: Iterable[str]) -> None:
    """Every runbook ``slack.acl.run`` names is registered: checked when the bot starts,
    so a typo is found then, not when someone first types ``/evac run``."""
    known = sorted(registered)
    for name, rule in config.runbook_acl.items():
        if name not in known:
            raise ConfigError(
                f"{rule.at or 'slack'}: slack.acl.run.runbooks.{name}: no registered runbook '{name}'"
                f"{suggest(name, known)}; registered: {', '.join(known) or 'none'}"
            )


def _seconds(where: Where, data: Mapping, key: str, default: float, expected: str, positive: bool = False) -> float:
    """``slack.KEY`` in seconds: a number >= 0 (> 0 when ``positive``)."""
    value = data.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 or (positive and value == 0):
        raise where.error(data.line_of(key), f"slack.{key}", f"expected {expected}, got {value!r}")
    return float(value)


def check_ready(config: SlackConfig) -> None:
    if not config.bot_token:
        raise ConfigError("slack: no bot token (set SLACK_BOT_TOKEN or slack.bot_token: env:NAME)")
    if config.mode == "socket" and not config.app_token:
        raise ConfigError("slack: Socket Mode needs an app-level token (SLACK_APP_TOKEN)")
    if config.mode == "http" and not config.signing_secret:
        raise ConfigError("slack: HTTP mode needs the signing secret (SLACK_SIGNING_SECRET)")
