"""The built-in evidence sources: what each reports about a host, polled or pushed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from evac.errors import HostUnreachable
from evac.evidence import Evidence, LibvirtSource, PowerSource, ProbeSource, Rule, Verdict
from evac.inventory import HostSpec

HOST = HostSpec("h1", "qemu+tcp://192.0.2.1/system")


class FakeConnection:
    def __init__(self) -> None:
        self.is_alive = True
        self.closed = False
        self.callbacks: list[Callable[[str], None]] = []

    def alive(self) -> bool:
        return self.is_alive and not self.closed

    def close(self) -> None:
        self.closed = True

    def on_close(self, callback: Callable[[str], None]) -> None:
        self.callbacks.append(callback)


class Libvirt:
    """A libvirt that answers or not, and the connections it handed out."""

    def __init__(self) -> None:
        self.answers = True
        self.handed: list[FakeConnection] = []
        self.pushed: list[Evidence] = []

    def connect(self, spec: HostSpec) -> FakeConnection:
        if not self.answers:
            raise HostUnreachable(f"{spec.name}: no answer")
        self.handed.append(FakeConnection())
        return self.handed[-1]


@pytest.fixture
def libvirt() -> Libvirt:
    return Libvirt()


def verdict(evidence: Evidence | None) -> tuple[Verdict, str] | None:
    return None if evidence is None else (evidence.verdict, evidence.detail)


def test_libvirt_source_reports_alive_once_connected_then_nothing_new(libvirt: Libvirt) -> None:
    watch = LibvirtSource(libvirt.connect).watch(HOST, libvirt.pushed.append)
    first = watch.poll()
    assert first is not None and (first.source, first.host, first.verdict) == ("libvirt", "h1", Verdict.ALIVE)
    assert watch.poll() is None
    assert len(libvirt.handed) == 1


def test_libvirt_source_reports_a_host_it_cannot_connect_to_as_lost(libvirt: Libvirt) -> None:
    libvirt.answers = False
    watch = LibvirtSource(libvirt.connect).watch(HOST, libvirt.pushed.append)
    assert verdict(watch.poll()) == (Verdict.DEAD, "libvirt connection lost: no connection")


def test_libvirt_source_pushes_the_close_callbacks_reason_at_once(libvirt: Libvirt) -> None:
    watch = LibvirtSource(libvirt.connect).watch(HOST, libvirt.pushed.append)
    watch.poll()
    libvirt.handed[0].callbacks[0]("keepalive")
    assert [verdict(e) for e in libvirt.pushed] == [(Verdict.DEAD, "libvirt connection lost: keepalive")]


def test_libvirt_source_closes_a_dead_connection_and_reconnects_on_the_next_poll(libvirt: Libvirt) -> None:
    watch = LibvirtSource(libvirt.connect).watch(HOST, libvirt.pushed.append)
    watch.poll()
    libvirt.handed[0].is_alive = False
    assert verdict(watch.poll()) == (Verdict.DEAD, "libvirt connection lost: no connection")
    assert libvirt.handed[0].closed
    assert verdict(watch.poll()) == (Verdict.ALIVE, "")
    assert len(libvirt.handed) == 2


def test_closing_the_libvirt_watch_closes_its_connection(libvirt: Libvirt) -> None:
    watch = LibvirtSource(libvirt.connect).watch(HOST, libvirt.pushed.append)
    watch.poll()
    watch.close()
    assert libvirt.handed[0].closed


def test_a_lost_connection_is_confirmed_at_once_and_is_not_proof_alone() -> None:
    assert LibvirtSource(lambda spec: FakeConnection()).rule == Rule(confirm=1, conclusive=False)


def test_probe_source_says_alive_when_the_host_answers_and_dead_when_not() -> None:
    answering = {"h1": True}
    watch = ProbeSource(lambda spec: answering[spec.name]).watch(HOST, lambda e: None)
    assert verdict(watch.poll()) == (Verdict.ALIVE, "")
    answering["h1"] = False
    assert verdict(watch.poll()) == (Verdict.DEAD, "probe missed")
    assert watch.every == 0.0  # every round of the host's loop


def test_probe_misses_need_confirming_twice_by_default() -> None:
    assert ProbeSource(lambda spec: True).rule == Rule(confirm=2)


@pytest.mark.parametrize(
    ("state", "expected"),
    [("on", (Verdict.ALIVE, "")), ("off", (Verdict.DEAD, "power is off (BMC)")), ("unknown", None)],
)
def test_power_source_reads_the_bmc_and_an_unknown_reading_says_nothing(
    state: str, expected: tuple[Verdict, str] | None
) -> None:
    watch = PowerSource(lambda spec: state, every=2.0).watch(HOST, lambda e: None)
    assert watch is not None and watch.every == 2.0
    assert verdict(watch.poll()) == expected


def test_power_off_is_proof_alone() -> None:
    assert PowerSource(lambda spec: "off").rule.conclusive


def test_power_source_with_polling_off_watches_no_host() -> None:
    assert PowerSource(lambda spec: "off", every=0).watch(HOST, lambda e: None) is None
