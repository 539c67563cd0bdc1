"""Token buckets per source: a burst, then the rate; bounded memory."""

from __future__ import annotations

import pytest

from evac.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_source_may_send_its_burst_at_once_then_must_wait() -> None:
    limiter = RateLimiter(rate=10, burst=3, clock=Clock())
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") > 0


def test_the_wait_says_when_the_next_token_comes() -> None:
    limiter = RateLimiter(rate=2, burst=1, clock=Clock())
    limiter.take("a")
    assert limiter.take("a") == pytest.approx(0.5)


def test_tokens_come_back_at_the_rate_and_no_more_than_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=2, clock=clock)
    limiter.take("a"), limiter.take("a")
    clock.now += 0.1
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    clock.now += 3600
    assert [limiter.take("a") == 0.0 for _ in range(3)] == [True, True, False]


def test_each_source_has_its_own_bucket() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_the_table_of_sources_stays_bounded_under_a_flood_from_many_addresses() -> None:
    limiter = RateLimiter(rate=1, burst=5, clock=Clock(), max_sources=100)
    for n in range(10_000):
        limiter.take(f"198.51.100.{n}")
    assert limiter.sources() <= 100


def test_idle_sources_are_forgotten_before_a_throttled_one() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock, max_sources=10)
    for n in range(9):
        limiter.take(f"idle{n}")
    clock.now += 10  # their buckets are full again: forgetting them changes nothing
    for _ in range(3):
        limiter.take("flooder")
    for n in range(5):
        limiter.take(f"new{n}")
    assert limiter.take("flooder") > 0  # still throttled: its empty bucket was kept
    assert limiter.sources() <= 10


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1), (1, 0)])
def test_a_rate_or_burst_that_cannot_limit_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimiter(rate=rate, burst=burst)
