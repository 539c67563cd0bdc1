"""Who may use the REST API (``/api/v1``), and for what: bearer tokens with scopes.

The ``api:`` section of evac.yaml names each token and what it may do::

    api:
      tokens:
        - {name: grafana, token: "file:/etc/evac/api-grafana", scopes: [read]}
        - {name: ops, token: "env:EVAC_API_OPS", scopes: [read, "run:maintenance", cancel]}

Scopes are ``read`` (hosts, jobs, events), ``run:RUNBOOK`` (start that registered
runbook; ``run:*`` any), and ``cancel``. A token is compared in constant time against
every configured one, so neither its value nor which entry it matched shows in the time
an answer takes.

The status page cannot send a header on every request of a browser, and a token never
goes in a query string, so ``POST /api/v1/session`` with a bearer token that may ``read``
sets a session cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
site's page sends it). Its value is ``EXPIRY.MAC.NAME``, the MAC keyed by the token
itself, so every replica with the same config accepts it, nothing is stored, and
removing or rotating a token ends its sessions. A session may only read: a cookie is
never accepted for a request that changes anything, so a forged cross-site request has
nothing to gain (CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import resolve_secret
from .yamldoc import Mapping as YamlMapping
from .yamldoc import Sequence, Where, section_mapping, shown, suggest

READ = "read"
CANCEL = "cancel"
RUN = "run:"
SCOPES = (READ, CANCEL, "run:RUNBOOK", "run:*")
SESSION_COOKIE = "evac_session"
MIN_TOKEN = 16  # characters: a token is a fleet's off switch; `openssl rand -hex 32` gives 64
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RUNBOOK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SECTION_KEYS = ("tokens", "rate_per_second", "burst", "session_hours", "secure_cookie")
TOKEN_KEYS = ("name", "token", "scopes")


@dataclass(frozen=True)
class ApiToken:
    name: str  # who the audit says asked: ``api:NAME``
    token: str = field(repr=False)
    scopes: frozenset[str]
    at: str = field(default="", compare=False)  # evac.yaml:LINE, for messages about it

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)


@dataclass(frozen=True)
class ApiSettings:
    tokens: tuple[ApiToken, ...] = ()
    rate_per_second: float = 10.0  # per source, for requests without valid credentials
    burst: int = 20
    session_hours: float = 8.0  # how long a status page's session cookie lasts
    secure_cookie: bool = False  # mark the cookie Secure: set when evac is reached over TLS (a proxy)


@dataclass(frozen=True)
class Identity:
    """Who a request is: the token's name and scopes, and whether it came by cookie."""

    name: str
    scopes: frozenset[str]
    session: bool = False

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)

    def __str__(self) -> str:
        return self.name


def allows(scopes: Iterable[str], scope: str) -> bool:
    """``run:*`` grants every ``run:RUNBOOK``; every other scope grants itself only."""
    granted = frozenset(scopes)
    return scope in granted or (scope.startswith(RUN) and f"{RUN}*" in granted)


# ---------------------------------------------------------------- credentials
def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None without one."""
    given = headers.get("authorization", "")
    return given[7:] if given.startswith("Bearer ") else None


def find_token(settings: ApiSettings, given: str) -> ApiToken | None:
    """The configured token equal to ``given``: every entry compared in constant time."""
    found = None
    for entry in settings.tokens:
        if hmac.compare_digest(given.encode(), entry.token.encode()):
            found = entry
    return found


def session_mac(token: ApiToken, expiry: int) -> str:
    message = f"evac-session:v1:{token.name}:{expiry}".encode()
    return hmac.new(token.token.encode(), message, hashlib.sha256).hexdigest()


def make_session(token: ApiToken, now: float, hours: float) -> tuple[str, int]:
    """A session cookie's value for ``token``, and its lifetime in seconds."""
    lifetime = max(1, int(hours * 3600))
    expiry = int(now) + lifetime
    return f"{expiry}.{session_mac(token, expiry)}.{token.name}", lifetime


def read_session(settings: ApiSettings, value: str, now: float) -> Identity | None:
    """The identity a session cookie stands for, or None: malformed, expired, forged, or
    made with a token no longer configured. A session may read, never more."""
    expiry, _, rest = value.partition(".")
    mac, _, name = rest.partition(".")
    if not (expiry.isdigit() and len(expiry) <= 12 and NAME.fullmatch(name) and len(mac) == 64):
        return None
    if int(expiry) <= now:
        return None
    token = next((t for t in settings.tokens if t.name == name), None)
    if token is None or not hmac.compare_digest(mac.encode(), session_mac(token, int(expiry)).encode()):
        return None
    if not token.allows(READ):
        return None
    return Identity(token.name, frozenset({READ}), session=True)


def session_cookie(value: str, lifetime: int, secure: bool) -> str:
    """The ``Set-Cookie`` header's value: script cannot read it, other sites cannot send it."""
    flags = f"; Max-Age={lifetime}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return f"{SESSION_COOKIE}={value}{flags}"


def expired_cookie(secure: bool) -> str:
    return session_cookie("", 0, secure)


# ---------------------------------------------------------------- the api: section
def parse_api(data: Any, source: str) -> ApiSettings:
    """The ``api:`` section of evac.yaml (registered through ``evac_config_sections``)."""
    where = Where(source)
    section = section_mapping(data, source, "api")
    where.reject_unknown(section, SECTION_KEYS, "api.")
    entries = Sequence()
    if "tokens" in section:
        entries = where.require_sequence(section["tokens"], section.line_of("tokens"), "api.tokens")
    tokens: list[ApiToken] = []
    for index, entry in enumerate(entries):
        label = f"api.tokens[{index}]"
        tokens.append(_token(where, where.require_mapping(entry, entries.line_of(index), label), label))
    _distinct(where, tokens)
    rate = section.get("rate_per_second", ApiSettings.rate_per_second)
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate <= 10_000:
        raise where.error(
            section.line_of("rate_per_second"),
            "api.rate_per_second",
            f"expected requests per second > 0 and at most 10000, got {shown(rate)}",
        )
    burst = section.get("burst", ApiSettings.burst)
    if not isinstance(burst, int) or isinstance(burst, bool) or not 1 <= burst <= 100_000:
        raise where.error(
            section.line_of("burst"), "api.burst", f"expected a whole number 1-100000, got {shown(burst)}"
        )
    hours = section.get("session_hours", ApiSettings.session_hours)
    if not isinstance(hours, int | float) or isinstance(hours, bool) or not 0 < hours <= 24 * 30:
        raise where.error(
            section.line_of("session_hours"),
            "api.session_hours",
            f"expected hours > 0 and at most 720 (30 days), got {shown(hours)}",
        )
    secure = section.get("secure_cookie", False)
    if not isinstance(secure, bool):
        raise where.error(
            section.line_of("secure_cookie"), "api.secure_cookie", f"expected true or false, got {shown(secure)}"
        )
    return ApiSettings(tuple(tokens), float(rate), burst, float(hours), secure)


def _token(where: Where, entry: YamlMapping, label: str) -> ApiToken:
    where.reject_unknown(entry, TOKEN_KEYS, f"{label}.")
    for key in TOKEN_KEYS:
        if key not in entry:
            raise where.error(entry.line, f"{label}.{key}", "required")
    name = entry["name"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise where.error(
            entry.line_of("name"),
            f"{label}.name",
            f"expected a name of letters, digits, '_', '.' or '-' (at most 64), got {shown(name, 60)}",
        )
    token = resolve_secret(where, entry, "token", f"{label}.token")
    if len(token) < MIN_TOKEN:
        raise where.error(
            entry.line_of("token"),
            f"{label}.token",
            f"the token is {len(token)} characters; use at least {MIN_TOKEN} (`openssl rand -hex 32`)",
        )
    if not token.isprintable() or any(c.isspace() for c in token):
        raise where.error(entry.line_of("token"), f"{label}.token", "expected printable characters without spaces")
    scopes = where.require_sequence(entry["scopes"], entry.line_of("scopes"), f"{label}.scopes")
    if not scopes:
        raise where.error(entry.line_of("scopes"), f"{label}.scopes", f"expected at least one of {', '.join(SCOPES)}")
    for number, scope in enumerate(scopes):
        if not _scope_ok(scope):
            hint = suggest(scope, (READ, CANCEL, "run:*")) if isinstance(scope, str) else ""
            raise where.error(
                scopes.line_of(number),
                f"{label}.scopes[{number}]",
                f"unknown scope {shown(scope, 60)}{hint}; expected {', '.join(SCOPES)}",
            )
    return ApiToken(name, token, frozenset(scopes), f"{where.source}:{entry.line}")


def _scope_ok(scope: object) -> bool:
    if not isinstance(scope, str):
        return False
    if scope in (READ, CANCEL):
        return True
    runbook = scope.removeprefix(RUN)
    return scope.startswith(RUN) and (runbook == "*" or RUNBOOK.fullmatch(runbook) is not None)


def _distinct(where: Where, tokens: list[ApiToken]) -> None:
    """Two entries with one name would share an audit identity; two with one token value
    would leave which scopes apply to chance."""
    for later, token in enumerate(tokens):
        for earlier in tokens[:later]:
            line = int(token.at.rsplit(":", 1)[1])
            if token.name == earlier.name:
                raise where.error(
                    line, f"api.tokens[{later}].name", f"'{token.name}' is named twice (also at {earlier.at})"
                )
            if hmac.compare_digest(token.token.encode(), earlier.token.encode()):
                raise where.error(
                    line,
                    f"api.tokens[{later}].token",
                    f"the same token as '{earlier.name}' ({earlier.at}); give each its own",
                )
