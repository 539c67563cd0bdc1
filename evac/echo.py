"""ICMP echo to many targets at once, and what the answers say about an outage.

A guest's network outage during a move is measured the way ``ping -i 0.01`` would, but
for many guests from one thread: one ICMP socket, one echo per target every
``interval``, replies matched by identifier and sequence (and a token in the payload, so
another pinger's replies on a raw socket are never taken for ours). Every send time and
answer time is kept, and :class:`EchoStats` reads them as a pure function, so what counts
as "lost" or as "the gap" is tested on tables without a network.

The socket is a raw one when the process may open it (root, or ``CAP_NET_RAW``), else
Linux's unprivileged ping socket (``SOCK_DGRAM``/``IPPROTO_ICMP``), which
``net.ipv4.ping_group_range`` must allow for one of the process's groups.

:class:`ProbeLoop` is the timing loop itself (send on a fixed beat, wait on a selector for
answers, keep waiting ``timeout`` for the last ones on stop); :mod:`evac.reachability`
runs TCP connects and UDP echoes on it too, so every kind of probe is counted alike.
"""

from __future__ import annotations

import array
import bisect
import math
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import EvacError

ECHO_REQUEST = 8
ECHO_REPLY = 0
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_PAYLOAD = struct.Struct("!8sII")  # the engine's token, the target's number, the probe's number
_SOL_RAW = 255
_ICMP_FILTER = 1  # a raw socket's filter: a mask of the ICMP types it drops
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33  # Linux: like SO_SNDBUF and SO_RCVBUF, past the sysctl caps (CAP_NET_ADMIN)
_BATCH = 1024  # replies read per wake-up before the loop looks at its clock again


@dataclass(frozen=True)
class Probe:
    """One probe: when it was sent and when its answer arrived (``time.monotonic()``);
    ``failed`` when none will (the connection was refused, the send failed)."""

    sent: float
    answered: float | None = None
    failed: bool = False


@dataclass(frozen=True)
class EchoStats:
    """What one target's probes say, read at ``end`` (when the watch stopped, or now).

    A probe that failed, or is unanswered ``timeout`` after it was sent, is *lost*; one
    still younger is *pending* (neither lost nor answered). An answer that comes late
    still counts as one.
    ``answering`` is True when the latest decided probe (answered or lost) was answered:
    after its last loss, the target answered again.

    ``longest_gap`` is the longest time in which no answer arrived: from the first send to
    the first answer, between two consecutive answers, and, while the target is not
    answering, from the last answer to ``end``. It is read on the answers' arrival times,
    not on the send times: a guest that stalls and then answers its queued echoes all at
    once was unreachable for the whole stall, which send times would hide; otherwise both
    read alike, since answers arrive spaced as their echoes were sent. A target that never
    misses reads one ``interval`` (plus jitter), so an outage lies within one interval of
    the gap. The time after the last answer counts only when a probe sent after it was
    lost: a watch that stops sending and waits for its last answers is no outage.

    ``first_answer`` is when the first answer arrived to a probe sent at or after
    ``after``: an echo sent before a switch-over says nothing about the new path.
    """

    sent: int
    answered: int
    lost: int
    longest_gap: float
    first_answer: float | None
    answering: bool

    @property
    def pending(self) -> int:
        return self.sent - self.answered - self.lost

    @classmethod
    def of(cls, probes: Sequence[Probe], end: float, timeout: float, after: float | None = None) -> EchoStats:
        answers = sorted(p.answered for p in probes if p.answered is not None)
        decided = [p for p in probes if p.answered is not None or p.failed or p.sent <= end - timeout]
        answering = bool(decided) and max(decided, key=lambda p: p.sent).answered is not None
        moments = [probes[0].sent, *answers] if probes else []
        if decided and not answering:
            moments.append(max(end, moments[-1]))
        first = [p.answered for p in probes if p.answered is not None and (after is None or p.sent >= after)]
        return cls(
            sent=len(probes),
            answered=len(answers),
            lost=len(decided) - len(answers),
            longest_gap=max((b - a for a, b in pairwise(moments)), default=0.0),
            first_answer=min(first) if first else None,
            answering=answering,
        )


class ProbeLog:
    """Every probe of one target, appended by its loop's thread and read by any other.

    Kept as two arrays of floats (NaN: no answer yet; -inf: failed, none will come), so a
    long watch costs 16 bytes a probe rather than an object each."""

    def __init__(self) -> None:
        self._sent = array.array("d")
        self._answered = array.array("d")
        self._changed = threading.Condition()
        self.error: str | None = None  # the last failure seen (a send that failed, a refused connect)

    def record_send(self, at: float) -> int:
        """A probe sent at ``at``; returns its number."""
        with self._changed:
            self._sent.append(at)
            self._answered.append(math.nan)
            return len(self._sent) - 1

    def record_answer(self, index: int, at: float) -> bool:
        """Probe ``index`` answered at ``at``; False for an unknown, failed or answered probe."""
        with self._changed:
            if not 0 <= index < len(self._sent) or not math.isnan(self._answered[index]):
                return False
            self._answered[index] = at
            self._changed.notify_all()
            return True

    def record_failure(self, index: int, reason: str) -> None:
        """Probe ``index`` failed for ``reason`` (``connection refused``): no answer will come."""
        with self._changed:
            if 0 <= index < len(self._sent) and math.isnan(self._answered[index]):
                self._answered[index] = -math.inf
            self.error = reason
            self._changed.notify_all()

    def record_error(self, reason: str) -> None:
        """A failure that names no probe (an ICMP error queued on a UDP socket)."""
        with self._changed:
            self.error = reason

    def count(self) -> int:
        with self._changed:
            return len(self._sent)

    def awaiting(self, since: float) -> bool:
        """Whether a probe sent at or after ``since`` may still be answered."""
        with self._changed:
            first = bisect.bisect_left(self._sent, since)
            return any(math.isnan(a) for a in self._answered[first:])

    def probes(self) -> tuple[Probe, ...]:
        with self._changed:
            pairs = list(zip(self._sent, self._answered, strict=True))
        return tuple(
            Probe(sent, answered if math.isfinite(answered) else None, failed=answered == -math.inf)
            for sent, answered in pairs
        )

    def wait_for_answer(self, after: float, timeout: float) -> float | None:
        """When the first answer to a probe sent at or after ``after`` arrived, waiting up
        to ``timeout`` seconds for one; None if none came."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                first = bisect.bisect_left(self._sent, after)
                found = [a for a in self._answered[first:] if math.isfinite(a)]
                if found:
                    return min(found)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)


class ProbeLoop(ABC):
    """One thread that sends a probe to every target each ``interval`` and records the answers.

    The beat is fixed (``start + k * interval``); a loop that falls behind skips beats
    rather than sending a burst. :meth:`stop` stops sending, then keeps listening until
    every probe is answered or ``timeout`` has passed since the last send, so the last
    probes are not counted lost only because the watch ended. A subclass opens its
    sockets in :meth:`_open`, sends in :meth:`_send` and reads in :meth:`_on_ready`.
    """

    def __init__(self, targets: Iterable[str], interval: float, timeout: float) -> None:
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval: expected seconds > 0, got {interval!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        self.targets: tuple[str, ...] = tuple(dict.fromkeys(targets))
        self.interval = interval
        self.timeout = timeout
        self.logs: dict[str, ProbeLog] = {target: ProbeLog() for target in self.targets}
        self.selector: selectors.BaseSelector  # opened by start(), with the wake-up pair
        self._wake_read: socket.socket
        self._wake_write: socket.socket
        self._stopping = threading.Event()
        self._drain = True
        self._thread: threading.Thread | None = None
        self._ended: float | None = None

    @abstractmethod
    def _open(self) -> None:
        """Open the sockets and register those that answers arrive on with ``self.selector``."""

    @abstractmethod
    def _send(self, number: int, target: str, index: int) -> None:
        """Send probe ``index`` to the ``number``-th target; an ``OSError`` counts it sent and lost."""

    @abstractmethod
    def _on_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        """A registered socket is ready: record what it answered."""

    @abstractmethod
    def _close(self) -> None:
        """Close the sockets ``_open`` opened (also after ``_open`` failed halfway)."""

    def _expire(self, now: float) -> None:
        """Give up on probes older than ``timeout`` (a TCP connect still in flight)."""
        return None

    def start(self) -> Self:
        """Open the sockets (an ``EvacError`` when that is not possible) and start sending."""
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("a probe loop starts once")
        try:
            self.selector = selectors.DefaultSelector()
            self._wake_read, self._wake_write = socket.socketpair()
        except OSError as exc:
            self._stopping.set()
            raise EvacError(f"cannot start probing: {reason_of(exc)}") from None
        self._wake_read.setblocking(False)
        self.selector.register(self._wake_read, selectors.EVENT_READ)
        try:
            self._open()
        except BaseException as exc:
            self._stopping.set()
            self._close()
            self.selector.close()
            self._wake_read.close()
            self._wake_write.close()
            if isinstance(exc, OSError):
                raise EvacError(f"cannot start probing: {reason_of(exc)}") from None
            raise
        self._thread = threading.Thread(target=self._run, name=f"evac-{type(self).__name__}", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: bool = True) -> None:
        """Stop sending; with ``drain``, wait up to ``timeout`` for the answers still due."""
        if self._stopping.is_set():
            return
        self._drain = drain
        self._stopping.set()
        if self._thread is None:  # never started
            return
        self._wake_write.send(b"x")
        self._thread.join()
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if not self._stopping.is_set():
            self.stop()

    @property
    def ended(self) -> float | None:
        """When the loop stopped listening (``time.monotonic()``), or None while it runs."""
        return self._ended

    def stats(self, target: str, after: float | None = None) -> EchoStats:
        """``target``'s statistics so far (or as they ended)."""
        probes = self.logs[target].probes()
        end = self._ended if self._ended is not None else time.monotonic()
        return EchoStats.of(probes, end, self.timeout, after)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._ended = time.monotonic()
            self._close()
            self.selector.close()

    def _loop(self) -> None:
        beat = time.monotonic()
        give_up: float | None = None
        while True:
            now = time.monotonic()
            if give_up is None and self._stopping.is_set():
                give_up = now + (self.timeout if self._drain else 0.0)
            if give_up is None and now >= beat:
                for number, target in enumerate(self.targets):
                    self._probe(number, target)
                beat += self.interval
                if beat <= now:
                    beat = now + self.interval
            self._expire(now)
            if give_up is not None and (
                now >= give_up or not any(log.awaiting(now - self.timeout) for log in self.logs.values())
            ):
                return
            wait = (give_up if give_up is not None else beat) - time.monotonic()
            for key, mask in self.selector.select(max(0.0, wait)):
                if key.fileobj is self._wake_read:
                    self._wake_read.recv(64)
                else:
                    self._on_ready(key, mask)

    def _probe(self, number: int, target: str) -> None:
        log = self.logs[target]
        index = log.record_send(time.monotonic())
        try:
            self._send(number, target, index)
        except OSError as exc:
            log.record_failure(index, reason_of(exc))


def reason_of(exc: OSError) -> str:
    """An OS error as a lowercase phrase for a one-line message (``connection refused``)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


class SocketMode(StrEnum):
    RAW = "raw"  # root or CAP_NET_RAW: the identifier is ours, and every ICMP reply reaches the socket
    DGRAM = "dgram"  # the unprivileged ping socket: the kernel sets the identifier and routes replies


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(identifier: int, sequence: int, payload: bytes) -> bytes:
    header = _HEADER.pack(ECHO_REQUEST, 0, 0, identifier, sequence)
    return _HEADER.pack(ECHO_REQUEST, 0, checksum(header + payload), identifier, sequence) + payload


def open_icmp_socket(mode: SocketMode | None = None) -> tuple[socket.socket, SocketMode]:
    """A raw ICMP socket, else the unprivileged ping socket; ``mode`` insists on one.
    An ``EvacError`` saying how to allow either when neither opens."""
    errors: list[str] = []
    for candidate, kind in ((SocketMode.RAW, socket.SOCK_RAW), (SocketMode.DGRAM, socket.SOCK_DGRAM)):
        if mode is not None and mode is not candidate:
            continue
        try:
            return socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP), candidate
        except PermissionError as exc:
            errors.append(f"{candidate} socket: {reason_of(exc)}")
    groups = " ".join(str(g) for g in sorted({os.getegid(), *os.getgroups()}))
    try:
        allowed = " ".join(PING_GROUP_RANGE.read_text().split())
    except OSError:
        allowed = "unreadable"
    raise EvacError(
        f"cannot send ICMP echo ({'; '.join(errors)}): run as root (or with CAP_NET_RAW), or let one of "
        f"this process's groups ({groups}) use ping sockets: net.ipv4.ping_group_range is {allowed}"
    )


def ipv4_of(target: str) -> str:
    """``target``'s IPv4 address (itself when it is one); an ``EvacError`` naming it when none."""
    try:
        return str(socket.getaddrinfo(target, None, socket.AF_INET, socket.SOCK_RAW)[0][4][0])
    except (OSError, UnicodeError) as exc:
        reason = reason_of(exc) if isinstance(exc, OSError) else "not a valid name"
        raise EvacError(f"{target}: no IPv4 address ({reason})") from None


def _widen_buffers(sock: socket.socket, targets: int) -> None:
    """Room for one beat's echoes and replies to every target, so a burst to a thousand
    guests is not lost in our own socket's buffers (root may exceed ``net.core.rmem_max``)."""
    size = max(1 << 20, targets * 4096)
    for option, forced in ((socket.SO_RCVBUF, _SO_RCVBUFFORCE), (socket.SO_SNDBUF, _SO_SNDBUFFORCE)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, option, size)


class EchoEngine(ProbeLoop):
    """ICMP echo to every target each ``interval`` from one socket; see the module's doc.

    ``targets`` are IPv4 addresses or names (resolved once, when built). Use it as a
    context manager, or :meth:`start` and :meth:`stop`; read :meth:`stats`,
    ``logs[target].probes()`` or ``logs[target].wait_for_answer(after, timeout)``::

        with EchoEngine(["198.19.3.17", "198.19.3.18"], interval=0.01) as echo:
            migrate()
        print(echo.stats("198.19.3.17").longest_gap)
    """

    def __init__(
        self, targets: Iterable[str], interval: float = 0.01, timeout: float = 1.0, mode: SocketMode | None = None
    ) -> None:
        super().__init__(targets, interval, timeout)
        self.addresses = tuple(ipv4_of(target) for target in self.targets)
        self.requested_mode = mode
        self.mode: SocketMode | None = None
        self.identifier = secrets.randbits(16)
        self.token = secrets.token_bytes(8)
        self._socket: socket.socket | None = None

    def _open(self) -> None:
        sock, self.mode = open_icmp_socket(self.requested_mode)
        _widen_buffers(sock, len(self.targets))
        if self.mode is SocketMode.RAW:
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~(1 << ECHO_REPLY) & 0xFFFFFFFF))
        sock.setblocking(False)
        self._socket = sock
        self.selector.register(sock, selectors.EVENT_READ)

    def _send(self, number: int, target: str, index: int) -> None:
        assert self._socket is not None
        payload = _PAYLOAD.pack(self.token, number, index)
        self._socket.sendto(echo_request(self.identifier, index & 0xFFFF, payload), (self.addresses[number], 0))

    def _on_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        assert self._socket is not None
        for _ in range(_BATCH):
            try:
                data, (source, *_) = self._socket.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket: its probe is simply not answered
            self._answer(data, source, time.monotonic())

    def _answer(self, data: bytes, source: str, at: float) -> None:
        if self.mode is SocketMode.RAW:
            data = data[(data[0] & 0x0F) * 4 :] if data else data  # past the IP header
        if len(data) < _HEADER.size + _PAYLOAD.size:
            return
        kind, code, _sum, identifier, sequence = _HEADER.unpack_from(data)
        token, number, index = _PAYLOAD.unpack_from(data, _HEADER.size)
        if kind != ECHO_REPLY or code != 0 or token != self.token or number >= len(self.targets):
            return
        if self.mode is SocketMode.RAW and identifier != self.identifier:
            return
        if source != self.addresses[number] or sequence != index & 0xFFFF:
            return
        self.logs[self.targets[number]].record_answer(index, at)

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
