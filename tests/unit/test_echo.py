"""The ICMP echo engine: what its probes say (pure tables), and real echoes to loopback.

The engine tests send real ICMP (root: a raw socket). The fallback to the unprivileged ping
socket, the error when neither is allowed and an outage are each run in a network
namespace of their own (``unshare --net``), so the host's settings are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evac.echo import EchoEngine, EchoStats, Probe, SocketMode, checksum, echo_request
from evac.errors import EvacError
from tests.conftest import poll_until, require

ROOT = Path(__file__).parents[2]


def stats(
    *probes: tuple[float, float | None], end: float, timeout: float = 1.0, after: float | None = None
) -> EchoStats:
    return EchoStats.of([Probe(sent, answered) for sent, answered in probes], end, timeout, after)


# ---------------------------------------------------------------- the statistics, pure
@pytest.mark.parametrize(
    ("probes", "end", "expected"),
    [
        pytest.param([], 5.0, (0, 0, 0, 0.0, False), id="nothing sent"),
        pytest.param([(0, 0.1), (1, 1.1), (2, 2.1)], 3.0, (3, 3, 0, 1.0, True), id="every echo answered: one interval"),
        pytest.param([(0, 0.1), (1, None), (2, 2.1)], 5.0, (3, 2, 1, 2.0, True), id="a loss between two answers"),
        pytest.param(
            [(0, 0.1), (1, None), (2, None)], 5.0, (3, 1, 2, 4.9, False), id="silent at the end: gap runs to end"
        ),
        pytest.param([(0, None), (1, None)], 3.0, (2, 0, 2, 3.0, False), id="never answered: the whole watch"),
        pytest.param([(0, 0.1), (1, None)], 1.5, (2, 1, 0, 0.1, True), id="younger than the timeout: pending"),
        pytest.param([(0, 2.5)], 3.0, (1, 1, 0, 2.5, True), id="a late answer still counts"),
        pytest.param([(0, 0.1), (1, 3.0), (2, 3.0), (3, 3.1)], 4.0, (4, 4, 0, 2.9, True), id="a stall is a gap"),
        pytest.param([(0, 1.5), (1, 1.2)], 2.0, (2, 2, 0, 1.2, True), id="answers out of order"),
        pytest.param([(0, None), (1, 1.1), (2, 2.1)], 3.0, (3, 2, 1, 1.1, True), id="from the first send"),
        pytest.param([(0, 0.1), (1, None), (2, 2.1), (3, None)], 3.5, (4, 2, 1, 2.0, True), id="pending after a loss"),
    ],
)
def test_stats_count_sent_answered_lost_and_the_longest_gap(
    probes: list[tuple[float, float | None]], end: float, expected: tuple[int, int, int, float, bool]
) -> None:
    got = stats(*probes, end=end)
    assert (got.sent, got.answered, got.lost, got.longest_gap, got.answering) == pytest.approx(expected)


def test_pending_probes_are_neither_answered_nor_lost() -> None:
    got = stats((0, 0.1), (1, None), (1.2, None), end=1.5)
    assert (got.answered, got.lost, got.pending) == (1, 0, 2)


def test_a_failed_probe_is_lost_at_once() -> None:
    got = EchoStats.of([Probe(0.0, 0.1), Probe(1.0, None, failed=True)], end=1.01, timeout=1.0)
    assert (got.lost, got.answering) == (1, False)
    assert got.longest_gap == pytest.approx(0.91)


@pytest.mark.parametrize(
    ("after", "first"),
    [(None, 0.1), (0.5, 2.1), (2.0, 2.1), (2.5, 3.1), (4.0, None)],
)
def test_first_answer_counts_only_echoes_sent_at_or_after_the_given_time(after: float | None, first: float) -> None:
    got = stats((0, 0.1), (1, None), (2, 2.1), (3, 3.1), end=4.0, after=after)
    assert got.first_answer == first


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0xFFFF), (b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7", 0x220D), (b"\x01", 0xFEFF)],  # RFC 1071's example
)
def test_checksum_is_the_internet_checksum(data: bytes, expected: int) -> None:
    assert checksum(data) == expected


def test_an_echo_request_checks_out_to_zero() -> None:
    assert checksum(echo_request(0x1234, 7, b"payload!")) == 0


# ---------------------------------------------------------------- real echoes
def root() -> None:
    require(os.geteuid() == 0, "ICMP echo needs root (a raw socket); CI runs as root")


def test_every_target_is_answered_on_loopback() -> None:
    root()
    with EchoEngine(["127.0.0.1", "127.0.0.2"], interval=0.01) as echo:
        poll_until(lambda: min(log.count() for log in echo.logs.values()) >= 20, 10, "20 echoes to each target")
    for target in ("127.0.0.1", "127.0.0.2"):
        got = echo.stats(target)
        assert (got.lost, got.pending, got.answered == got.sent, got.answering) == (0, 0, True, True)


def test_a_root_process_uses_a_raw_socket() -> None:
    root()
    with EchoEngine(["127.0.0.1"]) as echo:
        assert echo.mode is SocketMode.RAW


def test_every_answer_comes_after_its_own_echo() -> None:
    root()
    with EchoEngine(["127.0.0.1"], interval=0.01) as echo:
        poll_until(lambda: echo.logs["127.0.0.1"].count() >= 20, 10, "20 echoes")
    probes = echo.logs["127.0.0.1"].probes()
    assert all(p.answered is not None and p.answered >= p.sent for p in probes)


def test_two_engines_at_once_each_match_only_their_own_replies() -> None:
    root()
    with EchoEngine(["127.0.0.1"], interval=0.01) as one, EchoEngine(["127.0.0.1"], interval=0.003) as two:
        poll_until(lambda: one.logs["127.0.0.1"].count() >= 20, 10, "20 echoes from the first engine")
    for engine in (one, two):
        got = engine.stats("127.0.0.1")
        assert (got.lost, got.answered) == (0, got.sent)


def test_stop_waits_for_the_answers_still_due() -> None:
    root()
    with EchoEngine(["127.0.0.1"], interval=0.01) as echo:
        echo.logs["127.0.0.1"].wait_for_answer(0.0, 5)
    assert echo.stats("127.0.0.1").pending == 0


def test_probes_that_cannot_be_sent_are_lost_with_the_reason() -> None:
    root()
    with EchoEngine(["255.255.255.255"], interval=0.01, timeout=0.05) as echo:  # broadcast without SO_BROADCAST
        poll_until(lambda: echo.logs["255.255.255.255"].count() >= 3, 10, "3 echoes")
    got = echo.stats("255.255.255.255")
    assert (got.lost, got.answered, echo.logs["255.255.255.255"].error) == (got.sent, 0, "permission denied")


def test_a_target_without_an_ipv4_address_is_a_one_line_error() -> None:
    with pytest.raises(EvacError, match=r"^no-such-host\.invalid: no IPv4 address \(.+\)$"):
        EchoEngine(["no-such-host.invalid"])


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval: expected seconds > 0, got 0"):
        EchoEngine(["127.0.0.1"], interval=0)


# ---------------------------------------------------------------- in a network namespace of their own
def in_netns(script: str, *, raw: bool = True, ping_group: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this Python in a new network namespace with loopback up; without
    ``raw`` the process lacks CAP_NET_RAW (as a non-root user would)."""
    root()
    require(shutil.which("unshare") is not None and shutil.which("setpriv") is not None, "unshare and setpriv")
    setup = "ip link set lo up"
    if ping_group is not None:
        setup += f" && sysctl -qw net.ipv4.ping_group_range='{ping_group}'"
    drop = [] if raw else ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"]
    command = ["unshare", "--net", "sh", "-c", f'{setup} && exec "$@"', "sh", *drop, sys.executable, "-c", script]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


SOCKET_MODE = """
import json
from evac.echo import EchoEngine
from evac.errors import EvacError
try:
    with EchoEngine(["127.0.0.1"], interval=0.01) as echo:
        echo.logs["127.0.0.1"].wait_for_answer(0.0, 10)
    print(json.dumps({"mode": str(echo.mode), "answered": echo.stats("127.0.0.1").answered}))
except EvacError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_without_a_raw_socket_the_ping_socket_is_used_where_ping_group_range_allows() -> None:
    done = in_netns(SOCKET_MODE, raw=False, ping_group="0 0")
    result = json.loads(done.stdout or "{}")
    assert (result.get("mode"), result.get("answered", 0) > 0) == ("dgram", True), done.stderr


def test_without_either_socket_the_error_is_one_line_saying_how_to_allow_one() -> None:
    done = in_netns(SOCKET_MODE, raw=False)
    error = json.loads(done.stdout or "{}").get("error", done.stderr)
    assert "\n" not in error
    assert error.startswith(
        "cannot send ICMP echo (raw socket: operation not permitted; dgram socket: permission denied)"
    )
    assert error.endswith("net.ipv4.ping_group_range is 1 0")


OUTAGE = """
import dataclasses, json, threading, time
from evac.echo import EchoEngine
IGNORE = "/proc/sys/net/ipv4/icmp_echo_ignore_all"  # this namespace's own

def ignore(on):
    with open(IGNORE, "w") as f:
        f.write("1" if on else "0")

with EchoEngine(["127.0.0.1"], interval=0.01, timeout=0.2) as echo:
    log = echo.logs["127.0.0.1"]
    log.wait_for_answer(0.0, 10)
    ignore(True)
    silent_from = log.count()
    deadline = time.monotonic() + 10
    while log.count() < silent_from + 30 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    ignore(False)
    back, since = log.count(), time.monotonic()
    log.wait_for_answer(since, 10)
got = echo.stats("127.0.0.1")
print(json.dumps({"stats": dataclasses.asdict(got), "probes": [[p.sent, p.answered] for p in log.probes()],
                  "silent": [silent_from, back]}))
"""


def test_a_target_that_stops_answering_for_a_while_shows_the_gap_and_answers_again() -> None:
    done = in_netns(OUTAGE)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    got, probes = result["stats"], result["probes"]
    silent_from, back = result["silent"]
    unanswered = [sent for sent, answered in probes if answered is None]
    assert got["lost"] >= 20 and got["answering"]
    assert all(answered is None for _, answered in probes[silent_from + 2 : back - 2])
    assert got["longest_gap"] >= unanswered[-1] - unanswered[0]
