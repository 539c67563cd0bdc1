"""The webhooks: ``POST /hooks/alertmanager`` and ``POST /hooks/evacuate``.

Both start jobs only through the front door (``served.app.jobs``). In the order a request
meets them:

1. a token bucket per source address (``webhooks.rate_per_second``, ``webhooks.burst``):
   429 with ``Retry-After``; unauthenticated and refused requests count too;
2. webhooks off (neither ``webhooks.token`` nor ``webhooks.hmac_secret``): 403; the
   service shutting down (``served.accepting`` false): 503;
3. the body, at most ``webhooks.max_body_kib``, read before anything parses it: 413;
4. credentials: ``Authorization: Bearer <webhooks.token>`` (what Alertmanager sends: it
   cannot sign), compared in constant time, or a v1 signature (``evac.signatures``)
   whose digest is remembered in the journal, so a replay to any replica is a 401;
5. the body as a whole: UTF-8 JSON of the hook's model, or 400 naming the field.

A refused request is counted in ``evac_webhooks_total{hook, outcome}`` (the route's name
and the status, never the path or query) and audited at most once per source, hook and
reason every ten minutes: the audit keeps what was refused, not every attempt.

An Alertmanager batch that parses is answered 200 with one result per alert, whatever
each alert was: Alertmanager retries only on 5xx, and one bad alert must never drop a
real failover. Its repeats (same ``fingerprint`` and ``startsAt``) start nothing.

An alert is a signal, not proof: the failover runbook confirms the host is down itself
before it fences anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from .app import App
from .config import ServiceConfig, WebhookSettings
from .errors import ConfigError, EvacError, JournalError, LockedError, NotFound
from .inventory import AmbiguousHost, Inventory
from .jobs import Actor, Channel, Started
from .metrics import Metrics
from .ratelimit import RateLimiter
from .signatures import REMEMBER, SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, bearer_matches, verify
from .yamldoc import shown

log = logging.getLogger("evac.webhooks")

ALERT_REPEAT_TTL = 3600.0  # an alert's (fingerprint, startsAt) seen within this is a repeat
AUDIT_EVERY = 600.0  # one audit row per (source, hook, reason) in this many seconds
_DIGITS = re.compile(r"[0-9]+")


class Served(Protocol):
    """What the webhooks need of the process serving them (``evac.web.Served``).

    ``accepting`` (false while the service stops) is read when present; absent means true.
    """

    @property
    def app(self) -> App: ...
    @property
    def config(self) -> ServiceConfig: ...
    @property
    def metrics(self) -> Metrics: ...


# ---------------------------------------------------------------- request models
class Alert(BaseModel):
    """One alert of an Alertmanager webhook (version 4); only ``status`` and ``labels`` are
    required, the rest defaults to empty."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    status: str = Field(description="firing or resolved")
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: str = Field("", alias="startsAt")
    ends_at: str = Field("", alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""


class AlertBatch(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(strict=True, extra="ignore")

    version: Literal["4"]
    alerts: list[Alert]


class EvacuateRequest(BaseModel):
    """Evacuate a host: ``drain`` live-migrates its guests away; ``failover`` confirms it is
    down, fences it and restarts its guests elsewhere."""

    model_config = ConfigDict(strict=True, extra="forbid")

    host: str = Field(min_length=1, max_length=253, description="an inventory host's name or address")
    reason: str = Field("webhook", max_length=1000)
    mode: Literal["drain", "failover"] = "drain"


# ---------------------------------------------------------------- answer models
class Outcome(StrEnum):
    """What became of one alert of a batch."""

    ACCEPTED = "accepted"  # a job started: ``job`` and ``runbook``
    RESOLVED = "resolved"  # recorded
    IGNORED = "ignored"  # not for evac (``why``): no host label, unknown host, alertname filtered
    INVALID = "invalid"  # cannot be acted on as sent (``why``): unknown status, ambiguous host
    REFUSED = "refused"  # the front door said no (``why``): a job holds the host, ...
    DUPLICATE = "duplicate"  # a repeat of an alert already handled: nothing started


class AlertResult(BaseModel):
    index: int
    result: Outcome
    alert: str = ""
    fingerprint: str = ""
    host: str | None = None
    job: int | None = None
    runbook: str | None = None
    why: str | None = None


class AlertAnswer(BaseModel):
    results: list[AlertResult]


class EvacuateAnswer(BaseModel):
    host: str
    job: int
    runbook: str
    note: str = ""


class ErrorAnswer(BaseModel):
    error: str
    candidates: list[str] | None = None


# ---------------------------------------------------------------- refusals
class Refusal(StrEnum):
    """Why a request was refused: the audit action's suffix, a small vocabulary."""

    RATE_LIMITED = "rate_limited"
    OFF = "off"
    SHUTTING_DOWN = "shutting_down"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_BODY_ONLY = "signature_body_only"
    SIGNATURE_MALFORMED = "signature_malformed"
    SIGNATURE_STALE = "signature_stale"
    SIGNATURE_MISMATCH = "signature_mismatch"
    REPLAYED = "replayed"
    BAD_BODY = "bad_body"


STATUS = {
    Refusal.RATE_LIMITED: 429,
    Refusal.OFF: 403,
    Refusal.SHUTTING_DOWN: 503,
    Refusal.TOO_LARGE: 413,
    Refusal.BAD_BODY: 400,
}  # every other refusal is a 401


class Refused(Exception):
    def __init__(self, reason: Refusal, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = STATUS.get(reason, 401)
        self.headers = dict(headers or {})


# ---------------------------------------------------------------- bodies
M = TypeVar("M", bound=BaseModel)


def parse_body(body: bytes, model: type[M]) -> M:
    """``body`` as ``model``, or ``Refused`` (400) whose message names the field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(Refusal.BAD_BODY, f"body: not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise Refused(
            Refusal.BAD_BODY, f"body: invalid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise Refused(Refusal.BAD_BODY, "body: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # a constant, or an integer of thousands of digits
        raise Refused(Refusal.BAD_BODY, f"body: invalid JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(data, dict):
        raise Refused(Refusal.BAD_BODY, f"body: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Refused(Refusal.BAD_BODY, field_error(exc)) from None
    except RecursionError:
        raise Refused(Refusal.BAD_BODY, "body: nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def field_error(exc: ValidationError) -> str:
    """pydantic's first error as one line: ``alerts[1].status: required``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    kind, ctx = first["type"], first.get("ctx") or {}
    if kind == "missing":
        what = "required"
    elif kind == "extra_forbidden":
        what = "unknown field"
    elif kind == "literal_error":
        what = f"expected {str(ctx.get('expected', '')).replace(chr(39), '')}, got {shown(first['input'], 60)}"
    elif kind.endswith("_type"):
        what = f"expected {_TYPES.get(kind, kind.removesuffix('_type'))}, got {_json_type(first['input'])}"
    else:
        what = str(first["msg"])[0].lower() + str(first["msg"])[1:]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where or 'body'}: {what}{more}"


_TYPES = {"string_type": "a string", "dict_type": "an object", "list_type": "a list", "int_type": "an integer"}


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def request_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined, fit for an OpenAPI requestBody."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    body: dict[str, Any] = inline(schema)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


# ---------------------------------------------------------------- hosts
def source_of(address: str) -> str:
    """Who a request counts as for rate limits and the audit: its address, or for IPv6 its
    /64, so one sender cannot rotate through its own network for fresh allowances."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def find_host(inventory: Inventory, label: str) -> str | None:
    """The inventory host ``label`` names (``Inventory.lookup``: by name, then address);
    None when none does. ``AmbiguousHost`` naming every candidate: kvm4 never drains kvm3."""
    try:
        return inventory.lookup(label).name
    except NotFound:
        return None


def host_from_label(value: str) -> str:
    """``198.18.0.1:9100`` -> ``198.18.0.1``; ``[::1]:9100`` -> ``::1``; names pass through."""
    match = re.fullmatch(r"\[(.+)\](?::\d+)?|([^:]+)(?::\d+)?", value.strip())
    if not match:
        return value.strip()
    return match.group(1) or match.group(2)


# ---------------------------------------------------------------- audit, at most once a while
class AuditOnce:
    """True once per key per ``every`` seconds, across replicas (``journal.first_seen``),
    with a bounded local memo in front so a flood costs no journal write per request."""

    def __init__(
        self,
        first_seen: Callable[[str, float], bool],
        every: float = AUDIT_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.first_seen = first_seen
        self.every = every
        self.clock = clock
        self.max_keys = 10_000
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            if self._until.get(key, 0.0) > now:
                return False
            if len(self._until) >= self.max_keys:
                self._until = {k: t for k, t in self._until.items() if t > now}
                while len(self._until) >= self.max_keys:
                    del self._until[next(iter(self._until))]
            self._until[key] = now + self.every
        return self.first_seen(f"audit:{key}", self.every)


# ---------------------------------------------------------------- the router
@dataclass(frozen=True)
class Hook:
    name: str  # the metric label and the audit's prefix: the route's name, never its path
    actor: str  # who the audit says asked


ALERTMANAGER = Hook("alertmanager", str(Channel.ALERTMANAGER))
EVACUATE = Hook("evacuate", str(Channel.WEBHOOK))
REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer, "description": what}
    for status, what in (
        (400, "the body is not a valid request: the message names the field"),
        (401, "missing or wrong credentials, a stale or replayed signature"),
        (403, "webhooks are off"),
        (413, "the body is over webhooks.max_body_kib"),
        (429, "too many requests from this address: see Retry-After"),
        (503, "evac is shutting down"),
    )
}


class Webhooks:
    def __init__(self, served: Served, clock: Callable[[], float] = time.time) -> None:
        self.served = served
        self.settings: WebhookSettings = served.config.webhooks
        self.clock = clock
        self.limiter = RateLimiter(self.settings.rate_per_second, self.settings.burst)
        self.audit_once = AuditOnce(lambda key, ttl: self.served.app.journal.first_seen(key, ttl), clock=clock)

    # ------------------------------------------------------------ the way in
    async def handle(self, request: Request, hook: Hook, work: Callable[[str, bytes], JSONResponse]) -> JSONResponse:
        source = source_of(request.client.host if request.client else "unknown")
        try:
            self._admit()
            if not (self.settings.token and bearer_matches(request.headers, self.settings.token)):
                self._limit(source)  # a sender with the token is never limited: an alert is never dropped
            body = await self._read(request)
            headers = {key.lower(): value for key, value in request.headers.items()}
            return await run_in_threadpool(self._serve, hook, source, request.url.path, headers, body, work)
        except Refused as exc:
            return await run_in_threadpool(self._refuse, hook, source, exc)

    def _limit(self, source: str) -> None:
        wait = self.limiter.take(source)
        if wait > 0:
            raise Refused(
                Refusal.RATE_LIMITED,
                f"over {self.settings.rate_per_second:g} requests per second from {source} "
                f"(burst {self.settings.burst}); retry in {wait:.1f} s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _admit(self) -> None:
        if not (self.settings.token or self.settings.hmac_secret):
            raise Refused(Refusal.OFF, "webhooks are off: set webhooks.token or webhooks.hmac_secret in evac.yaml")
        if not getattr(self.served, "accepting", True):
            raise Refused(Refusal.SHUTTING_DOWN, "evac is shutting down: it takes no new work; send it again later")

    async def _read(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and not _DIGITS.fullmatch(length):
            raise Refused(Refusal.BAD_BODY, f"Content-Length: expected a number of bytes, got {length[:20]!r}")
        if length is not None and (len(length) > 15 or int(length) > limit):
            raise Refused(Refusal.TOO_LARGE, f"body of {length[:20]} bytes is over the {limit} byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(Refusal.TOO_LARGE, f"body is over the {limit} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def _serve(
        self,
        hook: Hook,
        source: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        work: Callable[[str, bytes], JSONResponse],
    ) -> JSONResponse:
        self._authenticate(headers, path, body)
        answer = work(source, body)
        self._count(hook, answer.status_code)
        return answer

    def _authenticate(self, headers: Mapping[str, str], path: str, body: bytes) -> None:
        token, secret = self.settings.token, self.settings.hmac_secret
        if token and bearer_matches(headers, token):
            return
        if SIGNATURE_HEADER.lower() in headers or TIMESTAMP_HEADER.lower() in headers:
            if not secret:
                raise Refused(
                    Refusal.UNAUTHORIZED, "signed requests are off: set webhooks.hmac_secret, or send the bearer token"
                )
            try:
                digest = verify(secret, headers, path, body, self.clock())
            except SignatureError as exc:
                raise Refused(Refusal(f"signature_{exc.flaw}"), str(exc)) from None
            if not self.served.app.journal.first_seen(f"nonce:{digest}", REMEMBER):
                raise Refused(
                    Refusal.REPLAYED,
                    "replayed: this signature was already used; sign each request anew, with the time it is sent",
                )
            return
        ways = [w for w, on in (("Authorization: Bearer <webhooks.token>", token), ("a v1 signature", secret)) if on]
        raise Refused(Refusal.UNAUTHORIZED, f"missing or wrong credentials: send {' or '.join(ways)}")

    def _refuse(self, hook: Hook, source: str, refused: Refused) -> JSONResponse:
        self._count(hook, refused.status)
        message = str(refused)
        detail = {
            "status": refused.status,
            "why": message[:300],
            "repeats": f"counted, not recorded, for {AUDIT_EVERY:.0f} s",
        }
        self._audit_once(hook, f"{refused.reason}:{source}", f"{hook.name}.{refused.reason}", source, detail)
        return JSONResponse({"error": message}, refused.status, refused.headers)

    def _count(self, hook: Hook, status: int) -> None:
        self.served.metrics.webhooks.labels(hook.name, str(status)).inc()

    def _audit_once(self, hook: Hook, key: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """An audit row, unless one was written for ``key`` in the last ten minutes. Best
        effort: a journal that cannot take it must not turn a refusal into a 500."""
        try:
            if self.audit_once(f"{hook.name}:{key}"):
                self.served.app.journal.audit(hook.actor, action, target, detail)
        except Exception as exc:
            log.warning("audit of %s %s not recorded: %s", action, target, exc)

    def _host(self, hook: Hook, source: str, label: str, key: str) -> str | None:
        """``find_host`` over the inventory, auditing an unknown or ambiguous label once a while."""
        try:
            host = find_host(self.served.app.inventory, label)
        except AmbiguousHost as exc:
            detail = {"candidates": exc.candidates, "source": source}
            self._audit_once(hook, f"ambiguous:{label}", f"{key}.ambiguous_host", label, detail)
            raise
        if host is None:
            self._audit_once(hook, f"unknown:{label}", f"{key}.unknown_host", label, {"source": source})
        return host

    # ------------------------------------------------------------ the hooks
    def alertmanager(self, source: str, body: bytes) -> JSONResponse:
        batch = parse_body(body, AlertBatch)
        results = [self._alert(source, index, alert) for index, alert in enumerate(batch.alerts)]
        return JSONResponse(AlertAnswer(results=results).model_dump(exclude_none=True), 200)

    def _alert(self, source: str, index: int, alert: Alert) -> AlertResult:
        name = alert.labels.get("alertname", "")
        fingerprint = alert.fingerprint or _fingerprint(alert.labels)
        result = AlertResult(index=index, result=Outcome.IGNORED, alert=name, fingerprint=fingerprint)
        if alert.status not in ("firing", "resolved"):
            return _with(
                result, Outcome.INVALID, why=f"status: expected firing or resolved, got {shown(alert.status, 60)}"
            )
        label = self.settings.host_label
        raw = alert.labels.get(label, "")
        if not raw:
            return _with(result, Outcome.IGNORED, why=f"no '{label}' label")
        try:
            host = self._host(ALERTMANAGER, source, host_from_label(raw), "alert")
        except AmbiguousHost as exc:
            return _with(result, Outcome.INVALID, why=str(exc))
        if host is None:
            return _with(result, Outcome.IGNORED, why="unknown host")
        result = _with(result, result.result, host=host)
        if alert.status == "firing" and self.settings.alertnames and name not in self.settings.alertnames:
            return _with(result, Outcome.IGNORED, why="alertname not in webhooks.alertnames")
        journal = self.served.app.journal
        seen = f"alert:{alert.status}:{fingerprint}:{alert.starts_at}"
        if not journal.first_seen(seen, ALERT_REPEAT_TTL):
            return _with(
                result, Outcome.DUPLICATE, why=f"a repeat of the alert that started at {alert.starts_at or '?'}"
            )
        if alert.status == "resolved":
            journal.audit(ALERTMANAGER.actor, "alert.resolved", host, {"alertname": name, "fingerprint": fingerprint})
            return _with(result, Outcome.RESOLVED)
        journal.audit(ALERTMANAGER.actor, "alert.firing", host, {"alertname": name, "fingerprint": fingerprint})
        jobs = self.served.app.jobs
        try:
            started = jobs.fail_over(host, Actor(Channel.ALERTMANAGER, name), f"alert {name}")
        except EvacError as exc:  # the front door audited its refusal
            # Not started, so not seen: Alertmanager's next repeat (or its retry after the
            # 500 a journal fault gives) is judged again rather than dropped as a duplicate.
            with contextlib.suppress(JournalError):
                journal.forget_seen(seen)
            if isinstance(exc, JournalError):
                raise
            return _with(result, Outcome.REFUSED, why=str(exc))
        jobs.spawn(started)
        return _with(result, Outcome.ACCEPTED, job=started.job, runbook=started.runbook.name)

    def evacuate(self, source: str, body: bytes) -> JSONResponse:
        asked = parse_body(body, EvacuateRequest)
        try:
            host = self._host(EVACUATE, source, asked.host, "evacuate")
        except AmbiguousHost as exc:
            return JSONResponse({"error": str(exc), "candidates": exc.candidates}, 409)
        if host is None:
            return JSONResponse({"error": f"unknown host '{asked.host}'", "ignored": True}, 404)
        jobs, actor = self.served.app.jobs, Actor(Channel.WEBHOOK, "evacuate")
        try:
            started: Started = (
                jobs.evacuate(host, actor, asked.reason)
                if asked.mode == "drain"
                else jobs.fail_over(host, actor, asked.reason)
            )
        except (LockedError, ConfigError) as exc:  # the front door audited its refusal
            return JSONResponse({"host": host, "error": str(exc)}, 409)
        except JournalError:
            raise
        except EvacError as exc:
            return JSONResponse({"host": host, "error": str(exc)}, 409)
        jobs.spawn(started)
        answer = EvacuateAnswer(host=host, job=started.job, runbook=started.runbook.name, note=started.note)
        return JSONResponse(answer.model_dump(), 202)


def _with(result: AlertResult, outcome: Outcome, **changes: Any) -> AlertResult:
    return result.model_copy(update={"result": outcome, **changes})


def _fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint is a hash of the labels: the same when a sender omits it."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def router(served: Served, clock: Callable[[], float] = time.time) -> APIRouter:
    """The webhook routes, for ``FastAPI.include_router``; ``clock`` (unix seconds) is what
    signatures' timestamps are checked against."""
    hooks = Webhooks(served, clock)
    api = APIRouter(tags=["webhooks"])

    @api.post(
        "/hooks/alertmanager",
        summary="Alertmanager webhook (version 4)",
        response_model=AlertAnswer,
        responses=REFUSALS,
        openapi_extra=request_schema(AlertBatch),
    )
    async def alertmanager(request: Request) -> JSONResponse:
        """A firing alert whose host label names an inventory host starts the failover
        runbook; a resolved one is recorded. 200 with one result per alert."""
        return await hooks.handle(request, ALERTMANAGER, hooks.alertmanager)

    @api.post(
        "/hooks/evacuate",
        summary="Evacuate a host",
        status_code=202,
        response_model=EvacuateAnswer,
        responses={
            **REFUSALS,
            404: {"description": "unknown host"},
            409: {"description": "refused: ambiguous host, a job holds it, ..."},
        },
        openapi_extra=request_schema(EvacuateRequest),
    )
    async def evacuate(request: Request) -> JSONResponse:
        """The same front door as ``evac evacuate``: a host already in maintenance is
        refused; a drain of a host that does not answer becomes a failover."""
        return await hooks.handle(request, EVACUATE, hooks.evacuate)

    return api
