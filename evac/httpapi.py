"""The service's HTTP API: webhooks that trigger runbooks, ``/metrics`` and ``/healthz``.

Webhooks need a bearer token or an HMAC signature (``X-Evac-Signature: sha256=HEX`` of
the body); bodies are size-limited before they are read; a malformed payload gets 400
naming the field, never a crash. An alert is a signal, not proof: the host-failure
runbook confirms the host is down itself before it fences anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .app import App
from .config import ServiceConfig, WebhookSettings
from .errors import ConfigError, LockedError
from .jobs import Actor, Channel, Started
from .metrics import Metrics

log = logging.getLogger("evac.http")
Handler = Callable[[str, Mapping[str, str], bytes], tuple[int, dict[str, str], bytes]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def bearer_matches(headers: Mapping[str, str], token: str) -> bool:
    given = headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())


def authorized(settings: WebhookSettings, headers: Mapping[str, str], body: bytes) -> bool:
    if settings.token and bearer_matches(headers, settings.token):
        return True
    if settings.hmac_secret:
        expected = "sha256=" + hmac.new(settings.hmac_secret.encode(), body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(headers.get("x-evac-signature", "").encode(), expected.encode()):
            return True
    return False


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(400, "body: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(400, f"body: invalid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None


def _field(data: Any, key: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    if not isinstance(data, dict):
        raise BadRequest(400, f"{where or 'body'}: expected an object")
    if key not in data:
        if required:
            raise BadRequest(400, f"{where}{'.' if where else ''}{key}: required")
        return None
    value = data[key]
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadRequest(400, f"{where}{'.' if where else ''}{key}: expected {name}")
    return value


def host_from_label(value: str) -> str:
    """``198.18.0.1:9100`` -> ``198.18.0.1``; ``[::1]:9100`` -> ``::1``; names pass through."""
    match = re.fullmatch(r"\[(.+)\](?::\d+)?|([^:]+)(?::\d+)?", value.strip())
    if not match:
        return value.strip()
    return match.group(1) or match.group(2)


class Served(Protocol):
    """What the HTTP API needs of the process serving it (``evac serve``'s ``Service``)."""

    app: App
    config: ServiceConfig
    metrics: Metrics

    def health(self) -> dict[str, Any]: ...


class HttpApi:
    def __init__(self, service: Served, address: str, port: int, settings: WebhookSettings) -> None:
        self.service = service
        self.settings = settings
        self.accepting = True
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/metrics"): self.metrics,
            ("POST", "/hooks/alertmanager"): self.alertmanager,
            ("POST", "/hooks/evacuate"): self.evacuate,
        }
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), fmt % args)

            def _serve(self) -> None:
                status, headers, body = api.handle(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile
                )
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer((address, port), RequestHandler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="evac-http")

    def mount(self, routes: Mapping[str, Handler]) -> None:
        for path, handler in routes.items():
            self.routes[("POST", path)] = handler
            self.routes[("GET", path)] = handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- dispatch
    def handle(
        self, method: str, path: str, headers: Mapping[str, str], stream: Any
    ) -> tuple[int, dict[str, str], bytes]:
        route = self.routes.get((method, path.split("?", 1)[0]))
        if route is None:
            return _json(404, {"error": f"no route {method} {path}"})
        try:
            body = self._read(headers, stream, path) if method == "POST" else b""
            return route(method, headers, body)
        except BadRequest as exc:
            hook = path.rsplit("/", 1)[-1]
            self.service.metrics.webhooks.labels(hook, str(exc.status)).inc()
            return _json(exc.status, {"error": str(exc)})
        except Exception as exc:
            log.exception("%s %s failed", method, path)
            return _json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _read(self, headers: Mapping[str, str], stream: Any, path: str) -> bytes:
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            raise BadRequest(411, "Content-Length required")
        limit = self.settings.max_body_bytes if path.startswith("/hooks/") else 10 * 2**20
        if int(length) > limit:
            raise BadRequest(413, f"body of {length} bytes is over the {limit} byte limit")
        return bytes(stream.read(int(length)))

    def _hook(self, hook: str, headers: Mapping[str, str], body: bytes) -> Any:
        if not (self.settings.token or self.settings.hmac_secret):
            raise BadRequest(403, "webhooks are off: set webhooks.token or webhooks.hmac_secret in evac.yaml")
        if not authorized(self.settings, headers, body):
            self.service.app.journal.audit("webhook", f"{hook}.unauthorized", "", {})
            raise BadRequest(401, "missing or wrong credentials")
        if not self.accepting:
            raise BadRequest(503, "evac is shutting down")
        return parse_json(body)

    # ---------------------------------------------------------------- routes
    def healthz(self, method: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Liveness for anyone (a load balancer, a watchdog); host states and jobs only with the token."""
        health = self.service.health()
        return _json(200, health if self._may_read(headers) else {"ok": health["ok"]})

    def metrics(self, method: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if not self._may_read(headers):
            return _json(401, {"error": "metrics need Authorization: Bearer <listen.metrics_token>"})
        return 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, self.service.metrics.text()

    def _may_read(self, headers: Mapping[str, str]) -> bool:
        token = self.service.config.metrics_token
        return not token or bearer_matches(headers, token)

    def alertmanager(self, method: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        data = self._hook("alertmanager", headers, body)
        version = _field(data, "version", str, "")
        if version != "4":
            raise BadRequest(400, f'version: expected "4" (Alertmanager webhook format), got {version!r}')
        alerts = _field(data, "alerts", list, "")
        outcome: dict[str, list[Any]] = {"accepted": [], "ignored": [], "resolved": []}
        journal = self.service.app.journal
        jobs = self.service.app.jobs
        for index, alert in enumerate(alerts):
            where = f"alerts[{index}]"
            status = _field(alert, "status", str, where)
            labels = _field(alert, "labels", dict, where)
            name = str(labels.get("alertname", ""))
            raw = labels.get(self.settings.host_label)
            if not isinstance(raw, str):
                outcome["ignored"].append({"alert": name, "why": f"no '{self.settings.host_label}' label"})
                continue
            host = self._host_named(host_from_label(raw))
            if host is None:
                journal.audit("alertmanager", "alert.unknown_host", raw, {"alertname": name, "status": status})
                outcome["ignored"].append({"alert": name, "label": raw, "why": "unknown host"})
            elif status == "resolved":
                journal.audit("alertmanager", "alert.resolved", host, {"alertname": name})
                outcome["resolved"].append(host)
            elif status != "firing":
                raise BadRequest(400, f"{where}.status: expected firing or resolved, got {status!r}")
            elif self.settings.alertnames and name not in self.settings.alertnames:
                outcome["ignored"].append({"alert": name, "host": host, "why": "alertname not in webhooks.alertnames"})
            else:
                journal.audit("alertmanager", "alert.firing", host, {"alertname": name})
                actor = Actor(Channel.ALERTMANAGER, name)
                outcome["accepted"].append(self._start(host, partial(jobs.fail_over, host, actor, f"alert {name}")))
        self.service.metrics.webhooks.labels("alertmanager", "202").inc()
        return _json(202, outcome)

    def evacuate(self, method: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        data = self._hook("evacuate", headers, body)
        raw = _field(data, "host", str, "")
        reason = _field(data, "reason", str, "", required=False) or "webhook"
        mode = _field(data, "mode", str, "", required=False) or "drain"
        if mode not in ("drain", "failover"):
            raise BadRequest(400, f"mode: expected drain or failover, got {mode!r}")
        host = self._host_named(raw)
        if host is None:
            self.service.app.journal.audit("webhook", "evacuate.unknown_host", raw, {"reason": reason})
            self.service.metrics.webhooks.labels("evacuate", "404").inc()
            return _json(404, {"error": f"unknown host '{raw}'", "ignored": True})
        jobs, actor = self.service.app.jobs, Actor(Channel.WEBHOOK, "evacuate")
        if mode == "drain":
            started = self._start(host, lambda: jobs.evacuate(host, actor, reason))
        else:
            started = self._start(host, lambda: jobs.fail_over(host, actor, reason))
        self.service.metrics.webhooks.labels("evacuate", "202").inc()
        return _json(202 if "job" in started else 409, started)

    def _start(self, host: str, record: Callable[[], Started]) -> dict[str, Any]:
        """Record the job through the front door, then run it in the background."""
        try:
            started = record()
        except LockedError as exc:
            return {"host": host, "error": str(exc)}
        except ConfigError as exc:
            raise BadRequest(400, str(exc)) from None
        self.service.app.jobs.spawn(started)
        return {"host": host, "job": started.job, "runbook": started.runbook.name}

    def _host_named(self, name: str) -> str | None:
        """An inventory host by name or address (alerts often carry the address)."""
        for spec in self.service.app.inventory.hosts:
            if name in (spec.name, spec.address):
                return spec.name
        return None


def _json(status: int, value: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, (json.dumps(value) + "\n").encode()
