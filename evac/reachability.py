"""Does an address answer, and for how long did it not: a watch, during a move or until it answers.

A guest is reachable the way its users reach it, so the kind of probe is chosen per
guest: ``icmp`` (echo, through :mod:`evac.echo`), ``tcp PORT`` (a connection is accepted)
or ``udp-echo PORT`` (a datagram comes back, as from an RFC 862 echo service)::

    reach = Reachability.parse("tcp 22")
    with OutageWatch(reach, "198.19.3.17", interval=0.05) as watch:
        migrate()
    watch.outage.longest_gap

Every probe of a watch is timed as :mod:`evac.echo` times echoes (:class:`EchoStats`), so
a TCP watch's gap means what an ICMP watch's does.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import selectors
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

from .echo import EchoEngine, EchoStats, ProbeLog, ProbeLoop, reason_of
from .errors import EvacError
from .yamldoc import shown

_DATAGRAM = struct.Struct("!8sI")  # the watch's token, the probe's number


class Kind(StrEnum):
    ICMP = "icmp"
    TCP = "tcp"
    UDP_ECHO = "udp-echo"


@dataclass(frozen=True)
class Reachability:
    """How a guest is probed: a kind, and a port for ``tcp`` and ``udp-echo``."""

    kind: Kind
    port: int | None = None

    def __post_init__(self) -> None:
        if (self.kind is Kind.ICMP) != (self.port is None):
            raise ValueError(f"{self.kind}: {'takes no port' if self.kind is Kind.ICMP else 'needs a port'}")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"{self.kind}: expected a port 1-65535, got {self.port}")

    @classmethod
    def parse(cls, text: str) -> Reachability:
        """``icmp``, ``tcp 22`` or ``udp-echo 7``; a ``ValueError`` saying what was expected
        (the caller adds the file:line and field, or the guest and attribute)."""
        words = text.split() if isinstance(text, str) else []
        try:
            kind = Kind(words[0].lower()) if words else None
        except ValueError:
            kind = None
        if kind is None or len(words) > 2:
            raise ValueError(f"expected icmp, tcp PORT or udp-echo PORT, got {shown(text)}")
        if kind is Kind.ICMP:
            if len(words) > 1:
                raise ValueError(f"icmp takes no port, got {shown(text)}")
            return cls(kind)
        if len(words) < 2:
            raise ValueError(f"{kind} needs a port ({kind} PORT), got {shown(text)}")
        if not (words[1].isascii() and words[1].isdigit()) or not 1 <= int(words[1]) <= 65535:
            raise ValueError(f"{kind}: expected a port 1-65535, got {shown(words[1])}")
        return cls(kind, int(words[1]))

    def __str__(self) -> str:
        return str(self.kind) if self.port is None else f"{self.kind} {self.port}"


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def resolve(address: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The family and socket address to reach ``address:port``; an ``EvacError`` naming it."""
    try:
        family, _type, _proto, _name, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        reason = reason_of(exc) if isinstance(exc, OSError) else "not a valid name"
        raise EvacError(f"{address}: cannot resolve ({reason})") from None
    return family, (str(sockaddr[0]), int(sockaddr[1]))


class TcpProbes(ProbeLoop):
    """A TCP connect to ``address:port`` every ``interval``; answered when the connection is
    accepted. Connects overlap (each may take up to ``timeout``), so an outage's end is
    seen within one interval, not one timeout. An accepted connection is reset, not
    closed: a watch at 100 connects a second would otherwise leave thousands of sockets in
    TIME_WAIT."""

    def __init__(self, address: str, port: int, interval: float, timeout: float) -> None:
        super().__init__([address], interval, timeout)
        self.family, self.sockaddr = resolve(address, port)
        self._flying: deque[tuple[float, socket.socket]] = deque()

    @property
    def log(self) -> ProbeLog:
        return self.logs[self.targets[0]]

    def _open(self) -> None:
        pass

    def _send(self, number: int, target: str, index: int) -> None:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        error = sock.connect_ex(self.sockaddr)
        if error == 0:
            self.log.record_answer(index, time.monotonic())
            _reset(sock)
            return
        if error not in (errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            raise OSError(error, os.strerror(error))
        self.selector.register(sock, selectors.EVENT_WRITE, index)
        self._flying.append((time.monotonic(), sock))

    def _on_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        self.selector.unregister(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error == 0:
            self.log.record_answer(int(key.data), time.monotonic())
            _reset(sock)
        else:
            self.log.record_failure(int(key.data), reason_of(OSError(error, os.strerror(error))))
            sock.close()

    def _expire(self, now: float) -> None:
        while self._flying and (self._flying[0][1].fileno() < 0 or self._flying[0][0] <= now - self.timeout):
            _sent, sock = self._flying.popleft()
            if sock.fileno() >= 0:
                self.selector.unregister(sock)
                sock.close()

    def _close(self) -> None:
        for _sent, sock in self._flying:
            sock.close()
        self._flying.clear()


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class UdpEchoProbes(ProbeLoop):
    """A datagram to ``address:port`` every ``interval``; answered when it comes back as sent."""

    def __init__(self, address: str, port: int, interval: float, timeout: float) -> None:
        super().__init__([address], interval, timeout)
        self.family, self.sockaddr = resolve(address, port)
        self.token = secrets.token_bytes(8)
        self._socket: socket.socket | None = None

    @property
    def log(self) -> ProbeLog:
        return self.logs[self.targets[0]]

    def _open(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(self.sockaddr)
        self._socket = sock
        self.selector.register(sock, selectors.EVENT_READ)

    def _send(self, number: int, target: str, index: int) -> None:
        assert self._socket is not None
        self._socket.send(_DATAGRAM.pack(self.token, index))

    def _on_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        assert self._socket is not None
        while True:
            try:
                data = self._socket.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable from an earlier datagram
                self.log.record_error(reason_of(exc))
                continue
            if len(data) == _DATAGRAM.size:
                token, index = _DATAGRAM.unpack(data)
                if token == self.token:
                    self.log.record_answer(index, time.monotonic())

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()


@dataclass(frozen=True)
class Outage:
    """What a watch saw: its probes, the longest time nothing answered, and whether the
    address answered at the end (see :class:`evac.echo.EchoStats` for each)."""

    check: str  # "tcp 22"
    address: str
    seconds: float  # from the first probe to the end of the watch
    sent: int
    answered: int
    lost: int
    longest_gap: float
    answered_at_end: bool
    error: str | None = None  # the last failure seen (connection refused, network unreachable)

    def __str__(self) -> str:
        end = "answering at the end" if self.answered_at_end else "NOT answering at the end"
        why = f" (last: {self.error})" if self.error and self.lost else ""
        return (
            f"{self.check} at {self.address}: longest gap {self.longest_gap:.3f} s, "
            f"{self.lost} of {self.sent} probes lost over {self.seconds:.1f} s, {end}{why}"
        )


class OutageWatch:
    """Probes ``address`` every ``interval`` in the background while a move runs.

    Start it before the move and stop it after (or use it as a context manager); then
    :attr:`outage` holds the result. A probe unanswered after ``timeout`` is lost.
    :meth:`stats` reads the probes so far, :meth:`wait_for_answer` waits for an answer::

        with OutageWatch(Reachability.parse("icmp"), "198.19.3.17", interval=0.01) as watch:
            hv.migrate(...)
        journal_outputs["outage"] = asdict(watch.outage)
    """

    def __init__(self, reach: Reachability, address: str, interval: float = 0.05, timeout: float = 1.0) -> None:
        self.reach = reach
        self.address = address
        self.outage: Outage | None = None
        self._loop: ProbeLoop
        if reach.kind is Kind.ICMP:
            self._loop = EchoEngine([address], interval, timeout)
        elif reach.kind is Kind.TCP:
            self._loop = TcpProbes(address, reach.port or 0, interval, timeout)
        else:
            self._loop = UdpEchoProbes(address, reach.port or 0, interval, timeout)

    @property
    def log(self) -> ProbeLog:
        return self._loop.logs[self._loop.targets[0]]

    def start(self) -> OutageWatch:
        """Start probing; an ``EvacError`` when it cannot (no ICMP socket allowed)."""
        self._loop.start()
        return self

    def stop(self, drain: bool = True) -> Outage:
        """Stop probing (with ``drain``, after waiting up to ``timeout`` for answers due) and
        return the :class:`Outage`."""
        if self.outage is None:
            self._loop.stop(drain)
            self.outage = self._report()
        return self.outage

    def __enter__(self) -> OutageWatch:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stats(self, after: float | None = None) -> EchoStats:
        return self._loop.stats(self._loop.targets[0], after)

    def wait_for_answer(self, timeout: float, after: float = -math.inf) -> float | None:
        """When the first answer to a probe sent at or after ``after`` arrived
        (``time.monotonic()``), waiting up to ``timeout`` seconds; None if none came."""
        return self.log.wait_for_answer(after, timeout)

    def _report(self) -> Outage:
        stats = self.stats()
        probes = self.log.probes()
        end = self._loop.ended if self._loop.ended is not None else time.monotonic()
        return Outage(
            check=str(self.reach),
            address=self.address,
            seconds=round(end - probes[0].sent, 3) if probes else 0.0,
            sent=stats.sent,
            answered=stats.answered,
            lost=stats.lost,
            longest_gap=round(stats.longest_gap, 4),
            answered_at_end=stats.answering,
            error=self.log.error,
        )
