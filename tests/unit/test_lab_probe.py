"""What the lab probe hands back, and the announces read off tcpdump's lines."""

from __future__ import annotations

import pytest

from evac.echo import Probe
from evac.lab.capture import Announce, parse
from evac.lab.probe import Echoes


def echoes(answered: str, start: float = 100.0, tick: float = 0.01) -> Echoes:
    """One echo per character, ``tick`` apart: ``1`` answered 1 ms later, ``0`` lost."""
    probes = [Probe(start + i * tick, start + i * tick + 0.001 if c == "1" else None) for i, c in enumerate(answered)]
    return Echoes(probes, end=start + len(answered) * tick + 2)


def test_a_window_reads_only_the_echoes_sent_inside_it() -> None:
    run = echoes("1111000011111111" + "0" * 30 + "1")
    inside = run.between(100.0, 100.155)
    assert (inside.sent, inside.lost) == (16, 4)
    assert inside.longest_gap == pytest.approx(0.05)


def test_the_first_answer_after_a_fault_is_to_an_echo_sent_after_it() -> None:
    run = echoes("11110000001111")
    assert run.stats(after=100.045).first_answer == pytest.approx(100.101)


def test_qemus_rarp_and_the_guests_gratuitous_arp_are_announces() -> None:
    rarp = (
        "1795821726.675918 52:54:00:71:14:30 > ff:ff:ff:ff:ff:ff, ethertype Reverse ARP (0x8035), length 60: "
        "Reverse Request who-is 52:54:00:71:14:30 tell 52:54:00:71:14:30, length 46"
    )
    garp = (
        "1795821726.704384 52:54:00:71:14:30 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: "
        "Request who-has 198.19.20.32 tell 198.19.20.32, length 28"
    )
    assert parse(rarp) == Announce(1795821726.675918, "52:54:00:71:14:30", "RARP")
    assert parse(garp) == Announce(1795821726.704384, "52:54:00:71:14:30", "ARP")


def test_a_unicast_arp_reply_is_not_an_announce() -> None:
    reply = (
        "1795821729.173502 52:54:00:71:14:30 > 3e:eb:eb:46:6b:0b, ethertype ARP (0x0806), length 42: "
        "Reply 198.19.20.32 is-at 52:54:00:71:14:30, length 28"
    )
    assert parse(reply) is None


def test_an_outage_open_when_the_window_closes_runs_on_to_the_next_answer() -> None:
    run = echoes("1100000011")
    assert run.between(100.0, 100.035).longest_gap == pytest.approx(0.07)


def test_a_guest_is_back_when_it_answers_after_the_silence_the_fault_began() -> None:
    run = echoes("11111000000111")  # the fault at 100.02: two more answers before the silence
    assert run.back_after(100.02) == pytest.approx(100.111)


def test_a_guest_that_never_went_silent_is_back_at_its_first_answer() -> None:
    assert echoes("1111").back_after(100.015) == pytest.approx(100.021)


def test_a_guest_still_silent_is_not_back() -> None:
    assert echoes("1110000").back_after(100.0) is None
