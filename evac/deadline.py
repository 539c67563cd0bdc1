"""An absolute deadline for a request's headers, enforced where the bytes arrive.

uvicorn's keep-alive timer restarts on every byte, so a client that sends one byte of a
header every few seconds holds its connection for good. :func:`header_deadline_protocol`
gives uvicorn's h11 protocol a timer that does not restart: it starts when the
connection opens or the previous response ends, stops when a request's headers are
complete, and closes the connection when it fires. The body has its own deadline in
``evac.web.RequestGuard``, once the headers are in.

The protocol also refuses what h11 lets through or turns into a traceback, with a 400
and a closed connection: a request with both ``Content-Length`` and
``Transfer-Encoding`` (RFC 9112 6.1: the two framings are how requests are smuggled), and
a ``Content-Length`` too long for ``int()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("evac.web")


class StrictConnection(h11.Connection):
    """h11's server side, which also refuses ambiguous framing and says why it refused."""

    def __init__(self, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size)
        self.refusal = ""
        self.headers_done = False  # a request's headers were parsed since the last look

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refusal = str(exc)
            raise
        except ValueError:  # h11 calls int() on Content-Length; Python refuses over 4,300 digits
            self.refusal = "Content-Length: too long"
            raise h11.RemoteProtocolError(self.refusal, 400) from None
        if isinstance(event, h11.Request):
            names = {name.lower() for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self.refusal = "Content-Length and Transfer-Encoding together: send one"
                raise h11.RemoteProtocolError(self.refusal, 400)
            self.headers_done = True
        return event


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with an absolute header deadline (seconds, per class)."""

    header_deadline: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self.conn = StrictConnection(size)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        conn = self.conn
        if isinstance(conn, StrictConnection) and conn.headers_done:
            conn.headers_done = False
            self._disarm()  # the request is in; its body has RequestGuard's deadline

    def on_response_complete(self) -> None:
        self._arm()  # before super(): it parses a pipelined request, which disarms again
        super().on_response_complete()

    def shutdown(self) -> None:
        """On server shutdown, a request whose body is still arriving has not reached the
        application (``RequestGuard`` reads the body first): close it now, rather than
        wait out the grace period and cancel it."""
        if self.cycle is not None and not self.cycle.response_complete and self.conn.their_state is h11.SEND_BODY:
            self.transport.close()
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        """A refusal below the application: JSON naming what was wrong, then close."""
        conn = self.conn
        why = conn.refusal if isinstance(conn, StrictConnection) and conn.refusal else msg
        body = (json.dumps({"error": f"bad request: {why}"}) + "\n").encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass  # h11 cannot answer in this state: closing is the answer
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_deadline, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("closed %s: no complete request headers in %s s", self.client, self.header_deadline)
            self.transport.close()


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""

    class Protocol(DeadlineH11Protocol):
        header_deadline = seconds

    return Protocol
