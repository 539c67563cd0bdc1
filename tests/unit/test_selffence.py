"""The watchdog rule and its timings: when an agent feeds, and what the leader's margin covers."""

from __future__ import annotations

import pytest

from evac.selffence import PeerAnswer, Timings, may_feed


def answers(**said: bool | None) -> dict[str, PeerAnswer]:
    return {host: PeerAnswer(host, reaches) for host, reaches in said.items()}


def test_an_agent_holding_its_lease_feeds_without_asking_anyone() -> None:
    assert may_feed(True, {}, peers=3) == (True, "holds its lease")


def test_an_agent_that_lost_etcd_feeds_when_a_majority_of_all_peers_lost_it_too() -> None:
    feed, why = may_feed(False, answers(host2=False, host3=False, host4=True), peers=3)
    assert feed and "the store failed" in why


def test_an_agent_whose_peers_reach_etcd_is_the_isolated_one_and_stops_feeding() -> None:
    feed, why = may_feed(False, answers(host2=True, host3=True), peers=2)
    assert not feed and "isolated" in why


def test_silent_peers_do_not_vouch_a_majority_is_of_all_peers_not_of_those_that_answered() -> None:
    feed, why = may_feed(False, answers(host2=False, host3=None, host4=None), peers=3)
    assert not feed and "no answer from host3, host4" in why


def test_a_host_without_peers_cannot_tell_its_isolation_from_a_store_failure_and_stops_feeding() -> None:
    assert may_feed(False, {}, peers=0)[0] is False


def test_the_lab_timings_make_a_fence_and_the_worst_case_adds_lease_timeout_and_margin() -> None:
    lab = Timings(lease_ttl=3, watchdog_timeout=3, margin=2, peer_timeout=0.5, reset=0.5)
    assert lab.problem() is None
    assert lab.worst_case() == 8
    assert "at most 8.0 s" in lab.summary()


def test_a_margin_that_does_not_cover_vouching_reset_and_drift_is_refused_term_by_term() -> None:
    short = Timings(lease_ttl=10, watchdog_timeout=60, margin=1, peer_timeout=1, reset=1)
    problem = short.problem()
    assert problem is not None
    setting, why = problem
    # session margin 2 s (20 % of the lease) + answer 1 s + reset 1 s + 1000 ppm of 71 s
    assert short.minimum_margin() == pytest.approx(4.071)
    assert setting == "margin"
    assert "3.07 s short" in why and "clock drift" in why and "watchdog reset 1.00 s" in why


def test_a_watchdog_timeout_a_feeding_round_does_not_fit_twice_in_is_refused() -> None:
    slow_peers = Timings(lease_ttl=3, watchdog_timeout=2, margin=200, peer_timeout=100, reset=1)
    problem = slow_peers.problem()
    assert problem is not None and problem[0] == "watchdog.timeout" and "must fit twice" in problem[1]


def test_the_agent_feeds_several_times_per_timeout() -> None:
    assert Timings(lease_ttl=3, watchdog_timeout=3).feed_every == 0.75
    assert Timings(lease_ttl=30, watchdog_timeout=60).feed_every == 1.0
