"""The REST API, ``/api/v1``: hosts, jobs and their events for reading; jobs to start and cancel.

Every start goes through the front door (``app.jobs``) on the ``api`` channel, as every
other channel's does: the same locks, parameter checks and audit. In the order a request
meets them:

1. no ``api:`` section in evac.yaml: 404 (the API is off; ``/healthz`` and the webhooks
   are unaffected);
2. credentials (``evac.apiauth``): a bearer token, or for a read the status page's session
   cookie. Without valid ones, 401; a source sending more than ``api.rate_per_second``
   (burst ``api.burst``) such requests gets 429 with ``Retry-After`` instead;
3. the scope the route needs (``read``, ``run:RUNBOOK``, ``cancel``): 403 without it;
4. the service shutting down: 503 for a start;
5. the body: 400 naming the field.

Refusals are audited (who, which route, why; never the token) at most once per source,
route and reason every ten minutes, and counted with every answer in
``evac_http_requests_total``.

``GET /api/v1/jobs/{id}/events`` is a Server-Sent Events stream over a plain GET: each
journal event as ``id:``, ``event:`` (its kind) and ``data:`` (JSON); ``Last-Event-ID``
resumes after an id; a comment line every ``heartbeat`` seconds keeps proxies from
closing it; an ``end`` event and the end of the stream follow the job's last event.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' parameter
# annotations at run time, and they name dependencies made inside :func:`router`.
import asyncio
import json
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, NoReturn, Protocol

from fastapi import APIRouter, Depends, Header, Query, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .apiauth import (
    CANCEL,
    READ,
    RUN,
    SESSION_COOKIE,
    ApiSettings,
    Identity,
    expired_cookie,
    find_token,
    make_session,
    read_session,
    session_cookie,
)
from .domainxml import parse_guest
from .errors import ConfigError, EvacError, JournalError, LockedError, NotFound
from .events import Event
from .guestrules import GuestSettings, resolve
from .jobs import Actor, Channel, target_of
from .journal import JobRecord
from .ratelimit import RateLimiter
from .runbook import load_runbook
from .states import EventKind, JobState
from .webhooks import AuditOnce, Refused, Served, parse_body, request_schema, source_of

log = logging.getLogger("evac.api")

PREFIX = "/api/v1"
MAX_LIMIT = 500
HEARTBEAT = 15.0  # seconds between comment lines on a quiet stream
POLL = 0.5  # seconds between reads of the journal for a stream's new events
RETRY_MS = 2000  # what a browser's EventSource waits before it reconnects
_DIGITS = re.compile(r"[0-9]{1,18}")

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from `api.tokens` in evac.yaml; its scopes are `read`, `run:RUNBOOK` (or `run:*`), `cancel`.",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="Set by `POST /api/v1/session` (the status page); reads only.",
)


class HostHealth(Protocol):
    """What the API reads of the monitor's view of one host (``evac.health.HostHealth``)."""

    @property
    def state(self) -> str: ...
    @property
    def reason(self) -> str: ...


# ---------------------------------------------------------------- request models
class StartRequest(BaseModel):
    """Start a registered runbook: what ``evac run RUNBOOK -p ...`` does, for a remote caller."""

    model_config = ConfigDict(strict=True, extra="forbid")

    runbook: str = Field(min_length=1, max_length=128, description="a registered runbook's name")
    params: dict[str, Any] = Field(default_factory=dict, description="the runbook's params, typed as it declares")
    target: str = Field("", max_length=253, description="optional: its first host param (another value: 400)")
    dry_run: bool = Field(False, description="answer the runbook's dry run (its plan) now, changing nothing")


# ---------------------------------------------------------------- answers
def job_view(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "runbook": job.runbook,
        "target": job.target,
        "state": str(job.state),
        "dry_run": job.dry_run,
        "params": job.params,
        "created": job.created,
        "updated": job.updated,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "orphaned": job.orphaned,
    }


def event_view(seq: int, event: Event) -> dict[str, Any]:
    return {
        "id": seq,
        "kind": str(event.kind),
        "job": event.job_id,
        "step": event.step,
        "item": event.item,
        "message": event.message,
        "data": event.data,
        "ts": event.ts,
    }


def sse_frame(seq: int, event: Event) -> str:
    """One Server-Sent Event: JSON keeps ``data:`` on one line whatever the message holds."""
    data = json.dumps(event_view(seq, event), default=str, separators=(",", ":"))
    return f"id: {seq}\nevent: {event.kind}\ndata: {data}\n\n"


def end_frame(job: JobRecord | None) -> str:
    data = json.dumps({"job": job.id, "state": str(job.state), "error": job.error} if job else {"job": None})
    return f"event: end\ndata: {data}\n\n"


def scoped(summary: str, scope: str) -> dict[str, Any]:
    """A route's OpenAPI summary and its description naming the scope it needs."""
    return {"summary": summary, "description": f"Scope: `{scope}`."}


# ---------------------------------------------------------------- the API
class Api:
    def __init__(
        self,
        served: Served,
        clock: Callable[[], float] = time.time,
        heartbeat: float = HEARTBEAT,
        poll: float = POLL,
    ) -> None:
        self.served = served
        found = served.config.sections.get("api")
        self.settings: ApiSettings | None = found if isinstance(found, ApiSettings) else None
        self.clock = clock
        self.heartbeat = heartbeat
        self.poll = poll
        s = self.settings or ApiSettings()
        self.limiter = RateLimiter(s.rate_per_second, s.burst)
        self.audit_once = AuditOnce(lambda key, ttl: self.served.app.journal.first_seen(key, ttl), clock=clock)

    # ------------------------------------------------------------ who asks
    def needs(self, scope: str | None, reads: bool = True) -> Callable[..., Identity]:
        """A dependency: the caller's identity, refused unless it holds ``scope`` (None: any
        valid credentials). ``reads``: the route changes nothing, so a session cookie will do."""

        def identify(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
            session: Annotated[str | None, Security(cookie_scheme)],
        ) -> Identity:
            return self.identify(request, scope, credentials, session if reads else None)

        return identify

    def on(self) -> ApiSettings:
        """The API's settings; a 404 saying how to turn it on when evac.yaml has no ``api:``."""
        if self.settings is None:
            raise HTTPException(404, "the REST API is off: add an api: section with tokens to evac.yaml (docs/api.md)")
        return self.settings

    def identify(
        self,
        request: Request,
        scope: str | None,
        credentials: HTTPAuthorizationCredentials | None,
        session: str | None,
    ) -> Identity:
        settings = self.on()
        source = source_of(request.client.host if request.client else "unknown")
        identity: Identity | None = None
        why = "missing credentials: send Authorization: Bearer <token> (api.tokens in evac.yaml)"
        if credentials is not None:
            token = find_token(settings, credentials.credentials)
            identity = Identity(token.name, token.scopes) if token else None
            why = "wrong credentials: the bearer token is not one of api.tokens"
        elif session is not None:
            identity = read_session(settings, session, self.clock())
            why = "the session has expired or is not valid: sign in again"
        elif request.cookies.get(SESSION_COOKIE) is not None:
            why = "a session cookie only reads: send Authorization: Bearer <token> to change anything"
        if identity is None:
            wait = self.limiter.take(source)
            if wait > 0:
                message = (
                    f"over {settings.rate_per_second:g} unauthenticated requests per second from {source} "
                    f"(burst {settings.burst}); retry in {wait:.1f} s"
                )
                self.refuse(
                    request,
                    source,
                    "api",
                    "rate_limited",
                    429,
                    message,
                    {"Retry-After": str(max(1, round(wait + 0.5)))},
                )
            self.refuse(request, source, "api", "unauthorized", 401, why, {"WWW-Authenticate": "Bearer"})
        if scope is not None and not identity.allows(scope):
            how = "a session" if identity.session else f"token '{identity.name}'"
            self.refuse(request, source, f"api:{identity.name}", "forbidden", 403, f"{how} lacks the scope '{scope}'")
        return identity

    def refuse(
        self,
        request: Request,
        source: str,
        who: str,
        reason: str,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> NoReturn:
        """Audit a refusal once a while (who, the route, why; never a credential), then raise it."""
        route = getattr(request.scope.get("route"), "path", request.url.path[:100])
        what = f"{request.method} {route}"
        try:
            if self.audit_once(f"api:{source}:{who}:{what}:{reason}"):
                detail = {"status": status, "why": message[:300], "source": source}
                self.served.app.journal.audit(who, f"api.{reason}", what, detail)
        except Exception as exc:  # a journal that cannot take it must not turn a refusal into a 500
            log.warning("audit of api.%s %s not recorded: %s", reason, what, exc)
        raise HTTPException(status, message, dict(headers or {}))

    # ------------------------------------------------------------ reads
    def hosts(self) -> dict[str, Any]:
        app = self.served.app
        journal = app.journal
        states = journal.host_states()
        health = self._health()
        rules = GuestSettings.of(app.settings.sections)
        running: dict[str, list[int]] = {}
        for job in journal.unfinished_jobs():
            running.setdefault(job.target, []).append(job.id)
        now = self.clock()
        hosts = []
        for spec in app.inventory.hosts:
            state = states.get(spec.name)
            taken = journal.snapshot_taken(spec.name)
            seen = health.get(spec.name) if health is not None else None
            hosts.append(
                {
                    "name": spec.name,
                    "address": spec.address,
                    "state": str(state.state) if state else "enabled",
                    "reason": state.reason if state else "",
                    "since": state.since if state else None,
                    "health": seen[0] if seen else None,
                    "health_reason": seen[1] if seen else "",
                    "guests": self._guests(spec.name, journal.definitions(spec.name), rules),
                    "snapshot_age": None if taken is None else round(now - taken, 1),
                    "jobs": running.get(spec.name, []),
                }
            )
        from .service import ha_health  # the service imports this module (through web)

        held, brake = journal.disarmed(), journal.brake()
        return {
            "hosts": hosts,
            "monitor": health is not None,
            "ha": ha_health(held),
            "storm_brake": {"reason": brake.reason, "since": brake.since} if brake else None,
        }

    def _health(self) -> dict[str, tuple[str, str]] | None:
        """The monitor's verdict on each host, when this process runs one."""
        monitor = getattr(self.served, "monitor", None)
        if monitor is None:
            return None
        seen: dict[str, HostHealth] = dict(getattr(monitor, "health", {}))
        return {name: (str(h.state), str(h.reason)) for name, h in seen.items()}

    def _guests(self, host: str, definitions: Mapping[str, str], rules: GuestSettings) -> list[dict[str, Any]]:
        guests: list[dict[str, Any]] = []
        shared = self.served.app.inventory.is_shared
        for name, xml in sorted(definitions.items()):
            try:
                guest = resolve(parse_guest(xml, host, "running", True, shared), rules)
            except (ET.ParseError, ValueError) as exc:
                guests.append({"name": name, "error": f"definition not readable: {exc}"})
                continue
            guests.append(
                {
                    "name": guest.name,
                    "memory_mib": guest.memory_mib,
                    "vcpus": guest.vcpus,
                    "priority": guest.priority,
                    "tags": list(guest.tags),
                    "protected": guest.rules.protected,
                }
            )
        return guests

    def jobs(self, limit: int, state: JobState | None) -> dict[str, Any]:
        journal = self.served.app.journal
        if state is JobState.RUNNING:
            found = journal.unfinished_jobs()[:limit]
        else:
            found = [j for j in journal.jobs(limit) if state is None or j.state == state]
        return {"jobs": [job_view(j) for j in found]}

    def job(self, job_id: int) -> dict[str, Any]:
        journal = self.served.app.journal
        job = self._job(job_id)
        events = journal.events(job_id)
        steps = []
        for step_id in self._step_ids(job, events):
            record = journal.step(job_id, step_id)
            if record is None:
                continue
            items = journal.items(job_id, step_id)
            steps.append(
                {
                    "id": step_id,
                    "state": str(record.state),
                    "error": record.error,
                    "outputs": record.outputs,
                    "items": [
                        {
                            "key": item.key,
                            "state": str(item.state),
                            "error": item.error,
                            "attempts": item.attempts,
                            "outputs": item.outputs,
                        }
                        for item in items.values()
                    ],
                }
            )
        report = next((s["outputs"] for s in steps if s["id"] == "report"), None)
        return {**job_view(job), "steps": steps, "report": report, "events": len(events)}

    def _job(self, job_id: int) -> JobRecord:
        job = self.served.app.journal.job(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @staticmethod
    def _step_ids(job: JobRecord, events: list[tuple[int, Event]]) -> list[str]:
        """The job's steps in its runbook's order, then any other step its events name (a
        runbook file changed or gone since)."""
        ordered: list[str] = []
        try:
            ordered = [step.id for step in load_runbook(job.source).all_steps()]
        except EvacError:
            pass
        for _, event in events:
            if event.step and event.step not in ordered:
                ordered.append(event.step)
        return ordered

    async def stream(self, job_id: int, after: int) -> AsyncIterator[str]:
        """The job's events after ``after``, as they come; ends once the job has finished
        and its last event was sent, or when the service stops (the client resumes)."""
        yield f"retry: {RETRY_MS}\n\n"
        journal = self.served.app.journal
        quiet = time.monotonic()
        finished_before = False
        while True:
            job = await run_in_threadpool(journal.job, job_id)
            rows = await run_in_threadpool(journal.events, job_id, after)
            for seq, event in rows:
                yield sse_frame(seq, event)
                after = seq
            if rows:
                quiet = time.monotonic()
            done = job is None or job.finished
            # The engine records the final state before it writes the job's last event, so
            # one more read after the state says finished catches that event too.
            if done and (finished_before or any(e.kind == EventKind.JOB_FINISHED for _, e in rows)):
                yield end_frame(job)
                return
            finished_before = done
            if not getattr(self.served, "accepting", True):
                return
            if time.monotonic() - quiet >= self.heartbeat:
                yield ": keepalive\n\n"
                quiet = time.monotonic()
            await asyncio.sleep(self.poll)

    # ------------------------------------------------------------ work
    def start(self, request: Request, identity: Identity, body: bytes) -> JSONResponse:
        try:
            asked = parse_body(body, StartRequest)
        except Refused as exc:  # a 400 naming the field
            raise HTTPException(exc.status, str(exc)) from None
        source = source_of(request.client.host if request.client else "unknown")
        scope = f"{RUN}{asked.runbook}"
        if not identity.allows(scope):
            self.refuse(
                request,
                source,
                f"api:{identity.name}",
                "forbidden",
                403,
                f"token '{identity.name}' lacks the scope '{scope}'",
            )
        if not getattr(self.served, "accepting", True):
            raise HTTPException(
                503, "evac is shutting down: it takes no new work; send it again later", {"Retry-After": "5"}
            )
        jobs = self.served.app.jobs
        try:
            if asked.dry_run:
                result = jobs.preview(asked.runbook, asked.params, asked.target)
                answer = {
                    "job": result.job_id,
                    "dry_run": True,
                    "runbook": asked.runbook,
                    "state": str(result.state),
                    "error": result.error,
                    "outputs": result.outputs,
                }
                return JSONResponse(json.loads(json.dumps(answer, default=str)), 200)
            target = target_of(self.served.app.runbook(asked.runbook), asked.params)
            if asked.target and asked.target != target:
                named = f"'{target}' (its first host param)" if target else "'' (it has no host param)"
                why = f"target: expected {named} for runbook '{asked.runbook}', got '{asked.target}'"
                raise HTTPException(400, why)
            started = jobs.start(asked.runbook, asked.params, Actor(Channel.API, identity.name), target)
        except JournalError:
            raise
        except LockedError as exc:
            raise HTTPException(409, str(exc)) from None
        except (ConfigError, NotFound) as exc:  # the front door audited its refusal
            raise HTTPException(400, str(exc)) from None
        except EvacError as exc:
            raise HTTPException(409, str(exc)) from None
        jobs.spawn(started)
        answer = {
            "job": started.job,
            "runbook": started.runbook.name,
            "target": started.target,
            "params": started.params,
        }
        return JSONResponse(
            json.loads(json.dumps(answer, default=str)), 202, {"Location": f"{PREFIX}/jobs/{started.job}"}
        )

    def cancel(self, identity: Identity, job_id: int) -> JSONResponse:
        self._job(job_id)
        job = self.served.app.jobs.cancel(job_id, Actor(Channel.API, identity.name))
        if job.finished:
            return JSONResponse({"job": job.id, "state": str(job.state), "cancel_requested": False}, 200)
        return JSONResponse({"job": job.id, "state": str(job.state), "cancel_requested": True}, 202)

    def session(self, identity: Identity) -> Response:
        settings = self.on()
        token = next(t for t in settings.tokens if t.name == identity.name)
        value, lifetime = make_session(token, self.clock(), settings.session_hours)
        self.served.app.journal.audit(
            f"api:{identity.name}", "api.session", "status page", {"hours": settings.session_hours}
        )
        return Response(
            status_code=204, headers={"Set-Cookie": session_cookie(value, lifetime, settings.secure_cookie)}
        )

    def end_session(self) -> Response:
        return Response(status_code=204, headers={"Set-Cookie": expired_cookie(self.on().secure_cookie)})


REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"description": what}
    for status, what in (
        (400, "a parameter or the body is not valid: the message names the field"),
        (401, "missing or wrong credentials, or an expired session"),
        (403, "the token lacks the scope this route needs"),
        (404, "no such job, or the API is off (no api: section in evac.yaml)"),
        (429, "too many unauthenticated requests from this address: see Retry-After"),
    )
}


def router(
    served: Served, clock: Callable[[], float] = time.time, heartbeat: float = HEARTBEAT, poll: float = POLL
) -> APIRouter:
    """The ``/api/v1`` routes, for ``FastAPI.include_router``."""
    api = Api(served, clock, heartbeat, poll)
    routes = APIRouter(prefix=PREFIX, tags=["api"], responses=REFUSALS)
    Reader = Annotated[Identity, Depends(api.needs(READ))]
    Starter = Annotated[Identity, Depends(api.needs(None, reads=False))]
    Canceller = Annotated[Identity, Depends(api.needs(CANCEL, reads=False))]
    Signer = Annotated[Identity, Depends(api.needs(READ, reads=False))]

    @routes.get("/hosts", **scoped("Inventory hosts: evac's state, health, guests", READ))
    def hosts(identity: Reader) -> dict[str, Any]:
        """Guests are those of each host's latest snapshot (no host is asked per request)."""
        return api.hosts()

    @routes.get("/jobs", **scoped("Recent jobs, newest first", READ))
    def jobs(
        identity: Reader,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = 50,
        state: Annotated[
            JobState | None, Query(description="only jobs in this state (among the latest `limit`)")
        ] = None,
    ) -> dict[str, Any]:
        return api.jobs(limit, state)

    @routes.get("/jobs/{job_id}", **scoped("A job with its steps, items and report", READ))
    def job(job_id: int, identity: Reader) -> dict[str, Any]:
        return api.job(job_id)

    @routes.get(
        "/jobs/{job_id}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
        **scoped("A job's events as a Server-Sent Events stream, until it finishes", READ),
    )
    async def events(
        job_id: int,
        identity: Reader,
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", description="resume after this event id")
        ] = None,
    ) -> StreamingResponse:
        after = 0
        if last_event_id is not None:
            if not _DIGITS.fullmatch(last_event_id.strip()):
                raise HTTPException(400, "Last-Event-ID: expected an event id (digits)")
            after = int(last_event_id)
        await run_in_threadpool(api._job, job_id)
        return StreamingResponse(
            api.stream(job_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @routes.post(
        "/jobs",
        status_code=202,
        openapi_extra=request_schema(StartRequest),
        summary="Start a runbook (or answer its dry run)",
        description="Scope: `run:RUNBOOK` for the runbook named in the body (`run:*`: any). "
        "202 with the job, or with `dry_run` 200 with the plan; 409 while another job holds its lock.",
        responses={409: {"description": "refused by the front door: a job holds the lock, ..."}},
    )
    async def start(request: Request, identity: Starter) -> JSONResponse:
        body = await request.body()
        return await run_in_threadpool(api.start, request, identity, body)

    @routes.post("/jobs/{job_id}/cancel", **scoped("Cancel a running job (it rolls back)", CANCEL))
    def cancel(job_id: int, identity: Canceller) -> JSONResponse:
        return api.cancel(identity, job_id)

    @routes.post(
        "/session",
        status_code=204,
        summary="Sign the status page in: a session cookie that reads",
        description=f"Scope: `{READ}`, by bearer token only. Sets `{SESSION_COOKIE}` (HttpOnly, SameSite=Strict), "
        "good for `api.session_hours` and for reading only.",
    )
    def session(identity: Signer) -> Response:
        return api.session(identity)

    @routes.delete("/session", status_code=204, summary="Sign out: the session cookie is dropped")
    def end_session() -> Response:
        return api.end_session()

    return routes
