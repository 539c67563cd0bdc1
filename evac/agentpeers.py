"""The agents' own port: one signed question peers ask each other, "can you reach etcd?".

An agent that lost etcd asks its peers directly, not through etcd, whether they lost it
too (:func:`evac.selffence.may_feed`). Their answers keep its host alive, so they are
worth forging: an attacker who could answer "lost" for the peers would keep an isolated
host running while evac restarts its guests elsewhere. Both directions are therefore
signed with the agents' shared key (``agent.secret``) in the webhooks' scheme
(:mod:`evac.signatures`): the question, so an outsider learns nothing, and the answer,
which also carries the question's random nonce, so an old answer cannot be replayed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait

import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .selffence import PeerAnswer
from .signatures import SignatureError, signed_headers, verify
from .web import ASGIApp

PATH = "/v1/etcd"
NONCE_CHARS = frozenset("0123456789abcdef")


def peer_app(host: str, reaches_etcd: Callable[[], bool | None], secret: str) -> ASGIApp:
    """What an agent serves on its port: the signed answer for ``host``; 503 while
    ``reaches_etcd()`` says None (the agent is starting or stopping: it vouches for nobody)."""

    async def etcd(request: Request) -> Response:
        body = await request.body()
        try:
            verify(secret, request.headers, PATH, body, time.time())
            nonce = json.loads(body)["nonce"]
        except SignatureError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'body: expected {"nonce": HEX}'}, status_code=400)
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64 or not set(nonce) <= NONCE_CHARS:
            return JSONResponse({"error": "nonce: expected 16 to 64 hex digits"}, status_code=400)
        reaches = reaches_etcd()
        if reaches is None:
            return JSONResponse({"error": "this agent is not running (starting or stopping)"}, status_code=503)
        answer = json.dumps({"host": host, "etcd": "ok" if reaches else "lost", "nonce": nonce}).encode()
        return Response(answer, media_type="application/json", headers=signed_headers(secret, PATH, answer))

    return Starlette(routes=[Route(PATH, etcd, methods=["POST"])])


class PeerAsker:
    """Asks every peer at once, each within ``timeout`` seconds in all."""

    def __init__(self, peers: Mapping[str, str], secret: str, timeout: float) -> None:
        self.peers = dict(peers)  # host name -> base URL, http://198.18.4.2:7480
        self.secret = secret
        self.timeout = timeout
        self._http = requests.Session()
        self._http.trust_env = False  # a proxy from the environment must not stand between peers
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.peers)), thread_name_prefix="agent-peer")

    def ask_all(self) -> dict[str, PeerAnswer]:
        """Every peer's answer; one not back within the timeout is no answer, so no
        answer acted on is older than ``timeout``."""
        futures = {host: self._pool.submit(self.ask, host) for host in self.peers}
        wait(futures.values(), timeout=self.timeout)
        return {
            host: future.result() if future.done() else PeerAnswer(host, None, "no answer in time")
            for host, future in futures.items()
        }

    def ask(self, host: str) -> PeerAnswer:
        nonce = secrets.token_hex(16)
        body = json.dumps({"nonce": nonce}).encode()
        half = self.timeout / 2  # connect, then read: the whole question within the timeout
        try:
            reply = self._http.post(
                self.peers[host] + PATH,
                data=body,
                headers={**signed_headers(self.secret, PATH, body), "Content-Type": "application/json"},
                timeout=(half, half),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return PeerAnswer(host, None, f"no answer: {type(exc).__name__}")
        if reply.status_code != 200:
            return PeerAnswer(host, None, f"HTTP {reply.status_code}")
        try:
            verify(self.secret, {k.lower(): v for k, v in reply.headers.items()}, PATH, reply.content, time.time())
            answer = json.loads(reply.content)
        except SignatureError as exc:
            return PeerAnswer(host, None, f"unsigned or forged answer: {exc}")
        except ValueError:
            return PeerAnswer(host, None, "answer is not JSON")
        if not isinstance(answer, dict) or answer.get("nonce") != nonce or answer.get("host") != host:
            return PeerAnswer(host, None, "answer is for another question or host (replayed?)")
        if answer.get("etcd") not in ("ok", "lost"):
            return PeerAnswer(host, None, "answer says neither ok nor lost")
        return PeerAnswer(host, answer["etcd"] == "ok")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
