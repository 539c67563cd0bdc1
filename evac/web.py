"""The HTTP server of ``evac serve`` (and of ``evac slack --mode http``): FastAPI on uvicorn.

:func:`build_app` is the application: ``/healthz``, ``/metrics`` (prometheus_client's
ASGI app), ``/openapi.json``, the webhooks (``evac.webhooks``), the REST API (``/api/v1``,
``evac.api``), the status page at ``/`` (``evac.statuspage``) and what plugin services
mount (Slack's ``/slack/events``). Errors are JSON, ``{"error": "alerts[0].status:
required"}``, naming the field.

:class:`WebServer` runs any ASGI application on uvicorn in a background thread, with what
a server facing untrusted clients needs and uvicorn alone does not give:

- an absolute deadline for a request's headers (``evac.deadline``: uvicorn's keep-alive
  timer restarts on every byte) and one for its body (:class:`RequestGuard`);
- a body size limit checked before the body is read (413), a 411 for a body without a
  length, and a closed connection after either, so an unread body is never parsed as
  the next request;
- at most ``max_concurrency`` requests in the application at once. uvicorn's
  ``limit_concurrency`` is not used: it counts idle sockets, so 30 slow clients would
  turn ``/healthz`` into a 503. Here a slow client holds no slot (its body is read
  first), and ``/healthz`` and ``/metrics`` take none;
- an events stream (``/api/v1/jobs/{id}/events``), open as long as its job runs, takes
  no slot either but one of ``max_streams`` places of its own, or a 503 at once;
- a listen backlog of ``backlog`` (2048), not ``http.server``'s 5.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import make_asgi_app
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__, api, statuspage, webhooks
from .deadline import header_deadline_protocol
from .errors import EvacError, JournalError
from .metrics import Metrics
from .signatures import bearer_matches

__all__ = ["ASGIApp", "RequestGuard", "Served", "WebServer", "WebSettings", "build_app"]

log = logging.getLogger("evac.web")
Observe = Callable[[Scope, int, float], None]  # (the request's scope, status, seconds)
DIGITS = re.compile(rb"[0-9]{1,18}")


class Served(webhooks.Served, Protocol):
    """What the HTTP API needs of the process serving it (``evac serve``'s ``Service``):
    what the webhooks need, and its health."""

    accepting: bool  # False while stopping: webhooks answer 503 to new work

    def health(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class WebSettings:
    """How much a client may take of the server, in time, bytes and slots."""

    backlog: int = 2048  # connections the kernel queues before accept
    header_deadline: float = 10.0  # s from connection (or previous answer) to complete headers
    body_deadline: float = 10.0  # s from complete headers to complete body
    # A request and an event stream each hold one of anyio's 40 worker threads (its default
    # limiter), so max_concurrency + max_streams must stay <= 40 or a request waits on a stream.
    max_concurrency: int = 16  # requests in the application at once
    queue_deadline: float = 5.0  # s a request waits for a slot before a 503
    keep_alive: int = 5  # s an idle connection stays open
    max_body_bytes: int = 1024 * 1024
    body_limits: tuple[tuple[str, int], ...] = ()  # (path prefix, smaller limit), e.g. ("/hooks/", 262144)
    unbounded: frozenset[str] = frozenset({"/healthz", "/metrics"})  # paths that take no slot
    streams: re.Pattern[str] = re.compile(r"/api/v1/jobs/[^/]+/events")  # long-lived: a stream place, not a slot
    max_streams: int = 16  # event streams open at once (with max_concurrency: <= anyio's 40 threads)
    shutdown_grace: int = 5  # s stop() lets answers in progress finish

    def body_limit(self, path: str) -> int:
        for prefix, limit in self.body_limits:
            if path.startswith(prefix):
                return limit
        return self.max_body_bytes


# ---------------------------------------------------------------- the guard
class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def answer(send: Send, status: int, message: str, close: bool = True) -> None:
    """A JSON refusal; ``close`` when the request's body is left unread."""
    body = (json.dumps({"error": message}) + "\n").encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: the body read whole within ``body_deadline`` and the size limit,
    then the application called with at most ``max_concurrency`` requests at once; each
    answer reported to ``observe``. The application sees the body as one message."""

    def __init__(self, app: ASGIApp, settings: WebSettings, observe: Observe | None = None) -> None:
        self.app = app
        self.settings = settings
        self.observe = observe
        self._slots: asyncio.Semaphore | None = None
        self._streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        seen = dict(scope)  # as it came: routing rewrites root_path and path in place
        status = 0

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._serve(scope, receive, counted)
        except BaseException:
            status = status or 500
            raise
        finally:
            if self.observe is not None and status:
                if "route" in scope:  # the route that answered, as routing left it in the scope
                    seen["route"] = scope["route"]
                self.observe(seen, status, time.monotonic() - started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self._body(scope, receive)
        except Refused as refusal:
            await answer(send, refusal.status, str(refusal))
            return
        if body is None:
            return  # the client left
        given = False

        async def replay() -> Message:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        if scope["path"] in self.settings.unbounded:
            await self.app(scope, replay, send)
            return
        if self.settings.streams.fullmatch(scope["path"]):
            await self._stream(scope, replay, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_concurrency)
        try:
            async with asyncio.timeout(self.settings.queue_deadline):
                await self._slots.acquire()
        except TimeoutError:
            await answer(send, 503, f"busy: {self.settings.max_concurrency} requests in progress; retry", close=False)
            return
        try:
            await self.app(scope, replay, send)
        finally:
            self._slots.release()

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A long-lived answer would hold an application slot for as long as it lasts, so
        streams have places of their own; when all are taken the answer is a 503 at once."""
        if self._streams >= self.settings.max_streams:
            await answer(send, 503, f"busy: {self.settings.max_streams} event streams open; retry", close=False)
            return
        self._streams += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._streams -= 1

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        limit = self.settings.body_limit(scope["path"])
        if length is None and not chunked:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                raise Refused(411, "Content-Length required")
            return b""
        if length is not None and not DIGITS.fullmatch(length):
            raise Refused(413 if length.isdigit() else 400, f"Content-Length: expected at most {limit} (bytes)")
        if length is not None and int(length) > limit:
            raise Refused(413, f"body of {int(length)} bytes is over the {limit} byte limit")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = bytes(message.get("body", b""))
                    size += len(chunk)
                    if size > limit:
                        raise Refused(413, f"body is over the {limit} byte limit")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise Refused(408, f"body not received within {self.settings.body_deadline} s") from None


# ---------------------------------------------------------------- the server
class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class WebServer:
    """An ASGI application on uvicorn, in a background thread, behind :class:`RequestGuard`.

    The socket is bound here, so a port in use stops the caller at once and ``port`` is
    the bound port also when 0 was asked. ``observe(scope, status, seconds)`` is called
    for every answer, refusals of the guard included (``evac.webmetrics.RequestMetrics``).
    """

    def __init__(
        self,
        asgi_app: ASGIApp,
        address: str,
        port: int,
        settings: WebSettings | None = None,
        observe: Observe | None = None,
    ) -> None:
        self.settings = s = settings or WebSettings()
        family, kind, proto, _, where = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0]
        self.socket = socket.socket(family, kind, proto)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(where)
            self.socket.listen(s.backlog)
        except OSError as exc:
            self.socket.close()
            raise EvacError(f"listen on {address}:{port}: {exc.strerror or exc}") from None
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            RequestGuard(asgi_app, s, observe),
            http=header_deadline_protocol(s.header_deadline),
            ws="none",
            loop="asyncio",
            lifespan="auto",
            log_config=None,
            access_log=False,  # an access log line would carry query strings, tokens included
            server_header=False,
            proxy_headers=False,
            backlog=s.backlog,
            timeout_keep_alive=s.keep_alive,
            timeout_graceful_shutdown=s.shutdown_grace,
        )
        self.server = _Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True, name="evac-web"
        )

    def start(self, timeout: float = 30.0) -> None:
        """Serve in the background; return once the application has started."""
        self._thread.start()
        if not self.server.ready.wait(timeout) or not self.server.started:
            self.stop()
            raise EvacError(f"the web server on port {self.port} did not start (see the log)")

    def stop(self) -> None:
        """Stop accepting, let answers in progress finish within ``shutdown_grace``, close."""
        if self._thread.is_alive():
            self.server.should_exit = True
            self._thread.join(self.settings.shutdown_grace + 10)
        self.socket.close()


# ---------------------------------------------------------------- the application
def field_error(errors: Sequence[Any]) -> str:
    """pydantic's first error as one line naming the field: ``alerts[0].status: required``."""
    if not errors:
        return "body: invalid"
    error = dict(errors[0])
    loc, kind, ctx = tuple(error.get("loc", ())), str(error.get("type", "")), dict(error.get("ctx") or {})
    if kind == "json_invalid":
        return f"body: invalid JSON: {ctx.get('error', 'malformed')} (at byte {loc[-1] if loc else 0})"
    parts = loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc
    where = ""
    for part in parts:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    where = where or (str(loc[0]) if loc else "body")
    expected = {
        "missing": "required",
        "string_type": "expected str",
        "int_type": "expected int",
        "int_parsing": "expected int",
        "float_type": "expected float",
        "bool_type": "expected bool",
        "list_type": "expected list",
        "dict_type": "expected an object",
        "model_type": "expected an object",
        "model_attributes_type": "expected an object",
        "extra_forbidden": "unknown field",
    }
    if kind == "literal_error":
        return f"{where}: expected {str(ctx.get('expected', '')).replace(chr(39), '')}, got {error.get('input')!r}"
    message = expected.get(kind) or str(error.get("msg", "invalid"))
    return f"{where}: {message[:1].lower()}{message[1:]}"


def validation_failed(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"error": field_error(errors)}, status_code=400)


def http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        return internal_error(request, exc)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.url.path}: method {request.method} not allowed"
    elif isinstance(exc.__cause__, UnicodeDecodeError):
        message = "body: not UTF-8"
    elif isinstance(exc.__cause__, RecursionError):
        message = "body: nested too deeply"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


def internal_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, JournalError):  # etcd without quorum, a full disk: said in one line, retry later
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the evac serve log"}, status_code=500)


class MetricsEndpoint:
    """prometheus_client's ASGI app behind ``listen.metrics_token``."""

    def __init__(self, token: str, metrics: Metrics) -> None:
        self.token = token
        self.app = make_asgi_app(registry=metrics.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token and not bearer_matches(Headers(scope=scope), self.token):
            response = JSONResponse(
                {"error": "metrics need Authorization: Bearer <listen.metrics_token>"}, status_code=401
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Mounted:
    """A plugin service's ASGI app, called as an app whether it is a function or an object."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self.app(scope, receive, send)


def build_app(served: Served, mounts: Mapping[str, ASGIApp] | None = None) -> FastAPI:
    """The application ``evac serve`` runs. ``mounts`` maps an exact path to an ASGI app
    (any method): what plugin services' ``mounts()`` return, Slack's ``/slack/events``."""

    web = FastAPI(
        title="evac",
        version=__version__,
        description="Webhooks that start evacuations and failovers, the REST API (`/api/v1`, bearer tokens "
        "with scopes: each route's description names the scope it needs), health and metrics of `evac serve`.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    web.add_exception_handler(RequestValidationError, validation_failed)
    web.add_exception_handler(HTTPException, http_error)
    web.add_exception_handler(Exception, internal_error)

    @web.get("/healthz", summary="Liveness for anyone; host states and jobs with listen.metrics_token")
    def healthz(request: Request) -> dict[str, Any]:
        health = served.health()
        token = served.config.metrics_token
        return health if not token or bearer_matches(request.headers, token) else {"ok": health["ok"]}

    web.router.routes.append(
        Route("/metrics", MetricsEndpoint(served.config.metrics_token, served.metrics), methods=["GET"])
    )
    web.include_router(webhooks.router(served))
    web.include_router(api.router(served))
    web.router.routes.extend(statuspage.routes())
    for path, mounted in (mounts or {}).items():
        web.router.routes.append(Route(path, Mounted(mounted), include_in_schema=False))
    return web
