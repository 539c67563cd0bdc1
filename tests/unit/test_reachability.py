"""Reachability: the check's text, one probe, and an outage watch, each for real on loopback
(a TCP listener and a UDP echo socket the test starts, ICMP to 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from evac.errors import EvacError
from evac.reachability import Kind, Outage, OutageWatch, Reachability
from tests.conftest import poll_until, require
from tests.udpecho import UdpEcho


# ---------------------------------------------------------------- the text
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("icmp", Reachability(Kind.ICMP)),
        ("ICMP", Reachability(Kind.ICMP)),
        ("tcp 22", Reachability(Kind.TCP, 22)),
        ("  tcp   80 ", Reachability(Kind.TCP, 80)),
        ("udp-echo 7", Reachability(Kind.UDP_ECHO, 7)),
    ],
)
def test_a_check_is_read_from_its_text(text: str, expected: Reachability) -> None:
    assert Reachability.parse(text) == expected


@pytest.mark.parametrize("text", ["icmp", "tcp 22", "udp-echo 7"])
def test_a_check_reads_back_as_its_text(text: str) -> None:
    assert str(Reachability.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected icmp, tcp PORT or udp-echo PORT, got ''"),
        ("ping", "expected icmp, tcp PORT or udp-echo PORT, got 'ping'"),
        ("tcp 22 23", "expected icmp, tcp PORT or udp-echo PORT, got 'tcp 22 23'"),
        ("icmp 7", "icmp takes no port, got 'icmp 7'"),
        ("tcp", "tcp needs a port (tcp PORT), got 'tcp'"),
        ("udp-echo", "udp-echo needs a port (udp-echo PORT), got 'udp-echo'"),
        ("tcp ssh", "tcp: expected a port 1-65535, got 'ssh'"),
        ("tcp 0", "tcp: expected a port 1-65535, got '0'"),
        ("tcp 65536", "tcp: expected a port 1-65535, got '65536'"),
        ("tcp -1", "tcp: expected a port 1-65535, got '-1'"),
    ],
)
def test_a_bad_check_is_one_line_saying_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Reachability.parse(text)
    assert str(info.value) == message


# ---------------------------------------------------------------- loopback services
class Listener:
    """A TCP listener on loopback that accepts and drops every connection; closed and
    opened again on the same port to play a guest that stops answering for a while."""

    def __init__(self) -> None:
        self.port = 0
        self.open()

    def open(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    try:
        found.close()
    except OSError:
        pass


@pytest.fixture
def udp_echo() -> Iterator[UdpEcho]:
    found = UdpEcho()
    yield found
    found.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def root() -> None:
    require(os.geteuid() == 0, "ICMP echo needs root (a raw socket); CI runs as root")


# ---------------------------------------------------------------- one probe
def check(reach: Reachability, address: str, timeout: float) -> str | None:
    """What the verify check asks: None once the address answered, else why it did not."""
    with OutageWatch(reach, address, interval=0.05, timeout=timeout) as watch:
        answered = watch.wait_for_answer(timeout)
        outage = watch.stop(drain=False)
    return None if answered is not None else outage.error or "no answer"


def test_a_listening_tcp_port_answers(listener: Listener) -> None:
    assert check(Reachability(Kind.TCP, listener.port), "127.0.0.1", timeout=1.0) is None


def test_a_closed_tcp_port_is_refused() -> None:
    assert check(Reachability(Kind.TCP, closed_port()), "127.0.0.1", timeout=1.0) == "connection refused"


def test_a_udp_echo_answers(udp_echo: UdpEcho) -> None:
    assert check(Reachability(Kind.UDP_ECHO, udp_echo.port), "127.0.0.1", timeout=1.0) is None


def test_a_udp_port_that_does_not_echo_is_no_answer_within_the_timeout(udp_echo: UdpEcho) -> None:
    udp_echo.deaf.set()
    assert check(Reachability(Kind.UDP_ECHO, udp_echo.port), "127.0.0.1", timeout=0.2) == "no answer"


def test_a_closed_udp_port_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert check(Reachability(Kind.UDP_ECHO, port), "127.0.0.1", timeout=1.0) == "connection refused"


def test_loopback_answers_icmp() -> None:
    root()
    assert check(Reachability(Kind.ICMP), "127.0.0.1", timeout=1.0) is None


def test_an_icmp_echo_that_cannot_be_sent_says_why() -> None:
    root()
    assert check(Reachability(Kind.ICMP), "255.255.255.255", timeout=0.2) == "permission denied"


# ---------------------------------------------------------------- a watch
def test_a_tcp_listener_closed_then_reopened_shows_the_gap(listener: Listener) -> None:
    with OutageWatch(Reachability(Kind.TCP, listener.port), "127.0.0.1", interval=0.01) as watch:
        assert watch.wait_for_answer(5) is not None
        listener.close()
        poll_until(lambda: watch.stats().lost >= 10, 10, "10 refused connects")
        listener.open()
        assert watch.wait_for_answer(5, after=watch.log.probes()[-1].sent) is not None
    outage = watch.stop()
    probes = watch.log.probes()
    refused = [p.sent for p in probes if p.failed]
    assert (outage.lost, outage.answered_at_end, outage.error) == (len(refused), True, "connection refused")
    assert outage.lost >= 10 and outage.longest_gap >= refused[-1] - refused[0]


def test_a_tcp_watch_of_a_steady_listener_loses_nothing(listener: Listener) -> None:
    with OutageWatch(Reachability(Kind.TCP, listener.port), "127.0.0.1", interval=0.01) as watch:
        poll_until(lambda: watch.stats().answered >= 20, 10, "20 accepted connects")
    outage = watch.stop()
    assert (outage.lost, outage.answered, outage.answered_at_end) == (0, outage.sent, True)


def test_a_udp_echo_that_goes_deaf_for_a_while_shows_the_gap(udp_echo: UdpEcho) -> None:
    with OutageWatch(Reachability(Kind.UDP_ECHO, udp_echo.port), "127.0.0.1", interval=0.01, timeout=0.1) as watch:
        assert watch.wait_for_answer(5) is not None
        udp_echo.deaf.set()
        deaf_from = watch.log.count()
        poll_until(lambda: watch.log.count() >= deaf_from + 20, 10, "20 datagrams while deaf")
        udp_echo.deaf.clear()
        assert watch.wait_for_answer(5, after=watch.log.probes()[-1].sent) is not None
    outage = watch.stop()
    unanswered = [p.sent for p in watch.log.probes() if p.answered is None]
    assert outage.lost >= 15 and outage.answered_at_end
    assert outage.longest_gap >= unanswered[-1] - unanswered[0]


def test_an_icmp_watch_of_loopback_loses_nothing() -> None:
    root()
    with OutageWatch(Reachability(Kind.ICMP), "127.0.0.1", interval=0.01) as watch:
        poll_until(lambda: watch.stats().answered >= 20, 10, "20 echo replies")
    outage = watch.stop()
    assert (outage.check, outage.lost, outage.answered, outage.answered_at_end) == ("icmp", 0, outage.sent, True)


def test_a_watch_that_ends_while_nothing_answers_says_so() -> None:
    port = closed_port()
    with OutageWatch(Reachability(Kind.TCP, port), "127.0.0.1", interval=0.01) as watch:
        poll_until(lambda: watch.stats().lost >= 5, 10, "5 refused connects")
    outage = watch.stop()
    assert (outage.answered, outage.answered_at_end) == (0, False)


def test_an_outage_reads_as_one_line() -> None:
    outage = Outage("tcp 22", "198.19.3.17", 12.04, 1204, 1180, 24, 0.2514, True, "connection refused")
    assert str(outage) == (
        "tcp 22 at 198.19.3.17: longest gap 0.251 s, 24 of 1204 probes lost over 12.0 s, "
        "answering at the end (last: connection refused)"
    )


def test_a_watch_of_a_name_that_does_not_resolve_is_a_one_line_error() -> None:
    with pytest.raises(EvacError, match=r"^no-such-host\.invalid: cannot resolve \(.+\)$"):
        OutageWatch(Reachability(Kind.TCP, 22), "no-such-host.invalid")
