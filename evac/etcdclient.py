"""A small etcd v3 client for the distributed journal, on top of etcd3gw.

etcd3gw talks to one endpoint, its watch stream has no read timeout, and it ignores a
watch's compaction and cancel replies. :class:`Cluster` wraps it: one etcd3gw client per
endpoint, a timeout on every request (a quorum-less cluster answers nothing, it must not
hang a controller), rotation to the next endpoint when one fails, and one-line errors:
:class:`~evac.errors.ClusterUnavailable` when no endpoint answers or the cluster has no
leader, :class:`EtcdError` when etcd refused a request.

Keys and values are ``str`` here (UTF-8 inside); the base64 of etcd's JSON gateway and
its int64-as-string numbers stay in this module.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from etcd3gw import exceptions as gwerrors
from etcd3gw.client import Etcd3Client
from etcd3gw.lease import Lease
from etcd3gw.types import Event as WatchEvent
from etcd3gw.watch import Watcher

from .errors import ClusterUnavailable, ConfigError, JournalError

log = logging.getLogger(__name__)

API_PATH = "/v3/"
# etcd's own words for "no quorum right now": worth another endpoint, never a real refusal.
UNAVAILABLE = (
    "no leader",
    "request timed out",
    "too many requests",
    "leader changed",
    "not capable",
    "timed out due to",
    "server is stopping",
    "not enough started members",
)
SORT_TARGETS = ("key", "version", "create", "mod", "value")
LEASE_CONNECT = 0.5  # s a lease's request may take to connect (``Cluster.for_lease``)


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...]  # "https://198.18.0.1:2379" or "http://127.0.0.1:23790"
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    prefix: str = "/evac/"
    timeout: float = 2.0  # seconds per request
    lease_ttl: int = 5  # seconds, a controller's session lease


def parse_url(url: str, tls: bool) -> tuple[str, ...]:
    """'etcd://h1:2379,h2:2379' -> ('https://h1:2379', 'https://h2:2379') (http when not tls).
    ConfigError (one line) on a bad URL."""
    expected = "expected etcd://host:port[,host:port...]"
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme != "etcd":
        raise ConfigError(f"journal URL {url!r}: not an etcd URL ({expected})")
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise ConfigError(f"journal URL {url!r}: no endpoint list ({expected})")
    endpoints = []
    for part in rest.split(","):
        try:
            parsed = urlsplit(f"//{part.strip()}")
            host, port = parsed.hostname, parsed.port
        except ValueError:
            host, port = None, None
        if not host or parsed.username or parsed.password:
            raise ConfigError(f"journal URL {url!r}: bad endpoint {part!r} ({expected})")
        host = f"[{host}]" if ":" in host else host
        endpoints.append(f"{'https' if tls else 'http'}://{host}:{port or 2379}")
    return tuple(endpoints)


@dataclass(frozen=True)
class KV:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]  # decoded: range responses' kvs as list[KV] under "kvs"


class EtcdError(JournalError):
    """etcd answered and refused the request; ``reason`` is etcd's own error text."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------- encoding and txn builders
def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


def _range_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's prefix range)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _kv(item: dict[str, Any]) -> KV:
    return KV(
        key=_text(item["key"]),
        value=_text(item.get("value", "")),
        create_revision=int(item.get("create_revision", 0)),
        mod_revision=int(item.get("mod_revision", 0)),
        version=int(item.get("version", 0)),
        lease=int(item.get("lease", 0)),
    )


def value_is(key: str, value: str) -> dict[str, Any]:
    return {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(value)}


def absent(key: str) -> dict[str, Any]:
    """The key does not exist (its create_revision is 0)."""
    return {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}


def present(key: str) -> dict[str, Any]:
    """The key exists (the opposite of :func:`absent`)."""
    return {"key": _b64(key), "result": "GREATER", "target": "CREATE", "create_revision": 0}


def mod_revision_is(key: str, revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": revision}


def put_op(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = lease
    return {"request_put": put}


def delete_op(key: str, *, prefix: bool = False) -> dict[str, Any]:
    delete = {"key": _b64(key)}
    if prefix:
        delete["range_end"] = _range_end(key)
    return {"request_delete_range": delete}


def get_op(key: str, *, prefix: bool = False) -> dict[str, Any]:
    get = {"key": _b64(key)}
    if prefix:
        get["range_end"] = _range_end(key)
    return {"request_range": get}


def _decode_response(response: dict[str, Any]) -> dict[str, Any]:
    """One txn response (``{"response_range": {...}}``) as a flat dict with typed fields."""
    inner: dict[str, Any] = next(iter(response.values()), {}) or {}
    out = dict(inner)
    if "response_range" in response:
        out["kvs"] = [_kv(item) for item in inner.get("kvs", [])]
        out["count"] = int(inner.get("count", 0))
    if "response_delete_range" in response:
        out["deleted"] = int(inner.get("deleted", 0))
    return out


# ---------------------------------------------------------------- errors
def _reason(exc: Exception) -> str:
    """etcd's or the network's own words for a failure, short and on one line."""
    detail = getattr(exc, "detail_text", None) or str(exc)
    try:
        body = json.loads(detail)
        if isinstance(body, dict) and (body.get("error") or body.get("message")):
            return str(body.get("error") or body.get("message"))
    except (TypeError, ValueError):
        pass
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", detail)
    if errno:
        return errno.group(1).strip().lower()
    if "timed out" in detail.lower() or isinstance(exc, gwerrors.ConnectionTimeoutError):
        return "timed out"
    return " ".join(detail.split())[:160] or type(exc).__name__


class _TimeoutSession(requests.Session):
    """A session whose requests all have a timeout unless one is given: etcd3gw's watch
    posts without any, and a frozen etcd then holds the caller forever."""

    def __init__(self, timeout: float | tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(*args, **kwargs)


class Cluster:
    """Every endpoint of one etcd cluster, used one at a time: the one that answered last.

    The API path is pinned to ``/v3/`` (etcd 3.4 and later; 3.3 served ``/v3beta/``):
    etcd3gw's auto-discovery would cost a request per client.
    """

    def __init__(self, settings: EtcdSettings, connect_timeout: float | None = None) -> None:
        """``connect_timeout``: each request on a new connection, given that long to connect
        (see :meth:`for_lease`); None: connections are kept, and ``settings.timeout`` is all."""
        if not settings.endpoints:
            raise ConfigError("etcd: no endpoint given (expected etcd://host:port[,host:port...])")
        self.settings = settings
        self.connect_timeout = connect_timeout
        timeout = settings.timeout if connect_timeout is None else (connect_timeout, settings.timeout)
        self._clients = [self._client(url, timeout) for url in settings.endpoints]
        self._current = 0

    def for_lease(self, ttl: float) -> Cluster:
        """The same cluster for keeping a lease alive: every request on a new connection,
        which must connect within a sixth of the lease (at most 0.5 s). A request on a kept
        connection to a member whose host went dark waits the whole request timeout (2 s)
        before the next member is tried, longer than a 3 s lease's slack: a healthy agent
        gave its lease up, found its peers still reaching etcd, and reset its host (found
        by the nemesis, seed 1498046784). A new connection to a dark host fails to connect
        at once; a slow but live member still has the whole timeout to answer.

        Its requests also ask a member to refuse at once when it has no leader: one cut off
        from its peers still answers, but a keepalive there would wait the whole request
        timeout for a leader it will not get (etcd's gRPC ``hasleader`` metadata). And each
        request is given a third of the lease, not the whole request timeout: a leader that
        answers slowly (its host losing packets) must leave time for another try within
        the lease's slack (found by the nemesis, seed 2122160409)."""
        lease = replace(self.settings, timeout=min(self.settings.timeout, ttl / 3))
        return Cluster(lease, connect_timeout=min(LEASE_CONNECT, ttl / 6))

    def _client(self, url: str, timeout: float | tuple[float, float]) -> Etcd3Client:
        parts = urlsplit(url)
        session = _TimeoutSession(timeout)
        if self.connect_timeout is not None:
            session.headers["Connection"] = "close"
            session.headers["Grpc-Metadata-hasleader"] = "true"
        # requests lets $REQUESTS_CA_BUNDLE override ``verify`` and $HTTPS_PROXY reroute:
        # etcd is reached directly and trusted by its own CA only.
        session.trust_env = False
        s = self.settings
        if s.ca is not None:
            session.verify = str(s.ca)
        if s.cert is not None and s.key is not None:
            session.cert = (str(s.cert), str(s.key))
        return Etcd3Client(
            host=parts.hostname or "localhost",
            port=parts.port or 2379,
            protocol=parts.scheme or "http",
            timeout=timeout,  # type: ignore[arg-type]  # requests takes (connect, read) too
            api_path=API_PATH,
            session=session,
        )

    # ---------------------------------------------------------------- requests
    def _call(self, what: Callable[[Etcd3Client], Any]) -> Any:
        """``what`` on the endpoint that answered last, then on each other one in turn."""
        last = ""
        count = len(self._clients)
        start = self._current
        for step in range(count):
            index = (start + step) % count
            client = self._clients[index]
            try:
                result = what(client)
            except (gwerrors.ConnectionFailedError, gwerrors.ConnectionTimeoutError) as exc:
                last = _reason(exc)
                continue
            except gwerrors.Etcd3Exception as exc:
                last = _reason(exc)
                if any(marker in last for marker in UNAVAILABLE):
                    continue
                raise EtcdError(f"etcd ({client.base_url}): {last}", last) from None
            except requests.RequestException as exc:
                last = _reason(exc)
                continue
            except (ValueError, KeyError, TypeError) as exc:
                # not JSON, or JSON without what etcd3gw reads (the gateway's {"error": …} body
                # where a stream's answer was due): not etcd's gateway, cut short, or no leader
                last = f"unreadable answer ({exc!r})"
                continue
            self._current = index
            return result
        endpoints = ", ".join(self.settings.endpoints)
        raise ClusterUnavailable(
            f"etcd: no endpoint answers ({endpoints}): {last}; nothing is fenced or restarted until quorum returns"
        )

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(lambda c: c.post(c.get_url(path), json=payload))
        return result

    def _range(self, payload: dict[str, Any]) -> tuple[list[KV], int]:
        result = self._post("/kv/range", payload)
        return [_kv(item) for item in result.get("kvs", [])], int(result.get("header", {}).get("revision", 0))

    def get(self, key: str) -> KV | None:
        kvs, _ = self._range({"key": _b64(key)})
        return kvs[0] if kvs else None

    def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        descending: bool = False,
        sort_target: str = "key",
        min_create_revision: int = 0,
        keys_only: bool = False,
    ) -> list[KV]:
        """Every key under ``prefix``, sorted by ``sort_target`` (key, version, create, mod, value)."""
        payload: dict[str, Any] = {
            "key": _b64(prefix),
            "range_end": _range_end(prefix),
            "sort_order": 2 if descending else 1,
            "sort_target": SORT_TARGETS.index(sort_target),
        }
        if limit:
            payload["limit"] = limit
        if min_create_revision:
            payload["min_create_revision"] = min_create_revision
        if keys_only:
            payload["keys_only"] = True
        return self._range(payload)[0]

    def put(self, key: str, value: str, lease: int = 0) -> int:
        payload: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            payload["lease"] = lease
        return int(self._post("/kv/put", payload).get("header", {}).get("revision", 0))

    def delete(self, key: str) -> int:
        return int(self._post("/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def delete_prefix(self, prefix: str) -> int:
        payload = {"key": _b64(prefix), "range_end": _range_end(prefix)}
        return int(self._post("/kv/deleterange", payload).get("deleted", 0))

    def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]] | None = None
    ) -> TxnResult:
        payload = {"compare": compare, "success": success, "failure": failure or []}
        result: dict[str, Any] = self._call(lambda c: c.transaction(payload))
        return TxnResult(
            succeeded=bool(result.get("succeeded", False)),
            revision=int(result.get("header", {}).get("revision", 0)),
            responses=[_decode_response(r) for r in result.get("responses", [])],
        )

    def grant(self, ttl: int) -> int:
        lease: Lease = self._call(lambda c: c.lease(ttl))
        return int(lease.id)

    def keepalive(self, lease: int) -> int:
        """The lease's remaining TTL after the refresh; -1 when the lease is gone."""
        ttl: int = self._call(lambda c: Lease(lease, c).refresh())
        return ttl if ttl > 0 else -1

    def revoke(self, lease: int) -> None:
        try:
            self._call(lambda c: Lease(lease, c).revoke())
        except EtcdError as exc:
            if "lease not found" not in exc.reason:
                raise

    def revision(self) -> int:
        return self._range({"key": _b64(self.settings.prefix), "limit": 1, "keys_only": True})[1]

    def compact(self, revision: int) -> None:
        """Drop the history before ``revision``; a revision compacted already is no error."""
        try:
            self._post("/kv/compaction", {"revision": revision})
        except EtcdError as exc:
            if "compacted" not in exc.reason:
                raise

    def endpoint_status(self) -> list[dict[str, Any]]:
        """Each endpoint on its own: endpoint, ok, leader (bool), raft_term, db_size, error."""
        statuses = []
        for url, client in zip(self.settings.endpoints, self._clients, strict=True):
            try:
                status: dict[str, Any] = dict(client.status())
            except (gwerrors.Etcd3Exception, requests.RequestException, ValueError) as exc:
                statuses.append(
                    {"endpoint": url, "ok": False, "leader": False, "raft_term": 0, "db_size": 0, "error": _reason(exc)}
                )
                continue
            header = status.get("header", {})
            statuses.append(
                {
                    "endpoint": url,
                    "ok": True,
                    "leader": str(header.get("member_id", "")) == str(status.get("leader", "-")),
                    "raft_term": int(status.get("raftTerm", header.get("raft_term", 0))),
                    "db_size": int(status.get("dbSize", 0)),
                    "error": "",
                }
            )
        return statuses

    def close(self) -> None:
        for client in self._clients:
            client.session.close()

    # ---------------------------------------------------------------- watch
    def watch(
        self, prefix: str, wake: Callable[[], None], stop: threading.Event, *, stale_after: float = 5.0
    ) -> threading.Thread:
        """A daemon thread that calls ``wake()`` whenever something under ``prefix`` changes.

        Level-triggered: a consumer re-reads what it cares about, so a lost event only
        delays it. Every ``stale_after`` seconds one read checks that the watch delivered
        the prefix's latest change; when it did not, or the stream broke, the watch is made
        again from the last revision it delivered (on the next endpoint that answers), and
        ``wake()`` is called. A start revision compacted away restarts from the current one.
        The thread ends soon after ``stop`` is set.
        """
        watch = _Watch(self, prefix, wake, stop, stale_after)
        thread = threading.Thread(target=watch.run, name=f"etcd-watch {prefix}", daemon=True)
        thread.start()
        return thread


class _Watch:
    """One prefix watch, re-made whenever it breaks or falls behind."""

    def __init__(
        self, cluster: Cluster, prefix: str, wake: Callable[[], None], stop: threading.Event, stale_after: float
    ) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.wake = wake
        self.stop = stop
        self.stale_after = stale_after
        self.delivered = 0  # the highest revision the stream delivered (or the watch started after)
        # A stream silent this long is re-made: etcd3gw's stream has no read timeout of its own.
        self.idle = max(3.0, 6 * stale_after)
        timeout = (cluster.settings.timeout, self.idle)
        self.clients = [cluster._client(url, timeout) for url in cluster.settings.endpoints]
        self.outage = False

    def on_event(self, event: WatchEvent) -> None:
        self.delivered = max(self.delivered, int(event["kv"].get("mod_revision", 0)))
        self.wake()

    def head(self) -> int:
        """The latest mod_revision under the prefix (0 when it is empty)."""
        kvs = self.cluster.range(self.prefix, limit=1, descending=True, sort_target="mod", keys_only=True)
        return kvs[0].mod_revision if kvs else 0

    def open(self) -> Watcher | None:
        """A watcher from ``delivered + 1``, or None when no endpoint answers."""
        try:
            if self.delivered == 0:
                self.delivered = self.cluster.revision()
            else:
                try:  # is the history since ``delivered`` still there?
                    self.cluster._range({"key": _b64(self.prefix), "limit": 1, "revision": self.delivered})
                except EtcdError as exc:
                    if "compacted" not in exc.reason:
                        raise
                    log.info("etcd watch %s: history compacted past %s, restarting", self.prefix, self.delivered)
                    self.delivered = self.cluster.revision()
            client = self.clients[self.cluster._current]
            watcher = Watcher(
                client,
                self.prefix,
                self.on_event,
                start_revision=self.delivered + 1,
                progress_notify=True,
                range_end=_text(_range_end(self.prefix)),
            )
        except (JournalError, gwerrors.Etcd3Exception, requests.RequestException) as exc:
            if not self.outage:
                log.warning("etcd watch %s: cannot watch: %s", self.prefix, exc)
                self.outage = True
            self.cluster._current = (self.cluster._current + 1) % len(self.clients)
            return None
        if self.outage:
            log.info("etcd watch %s: watching again", self.prefix)
            self.outage = False
        return watcher

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                watcher = self.open()
                if watcher is None:
                    self.stop.wait(min(self.stale_after, 1.0))
                    continue
                self.wake()  # whatever happened while nothing watched
                try:
                    self.follow(watcher)
                finally:
                    watcher.stop()
        finally:
            for client in self.clients:
                client.session.close()

    def follow(self, watcher: Watcher) -> None:
        """Until the stream ends, falls behind, or ``stop`` is set."""
        next_check = time.monotonic() + self.stale_after
        while not self.stop.wait(0.1):
            stats = watcher._executor.statistics  # etcd3gw keeps no other handle on its stream's thread
            if stats.executed or stats.failures:
                return  # the stream ended: etcd went away, or it was silent for ``idle`` s
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + self.stale_after
            try:
                head = self.head()
                if head > self.delivered:  # maybe still on its way: give it a moment
                    self.stop.wait(min(1.0, self.stale_after / 2))
                    if head > self.delivered:
                        log.info("etcd watch %s: stale at revision %s (head %s)", self.prefix, self.delivered, head)
                        return
            except JournalError:
                return
