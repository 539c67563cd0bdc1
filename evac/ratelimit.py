"""Token buckets per source: how many requests one client address may make, and when.

Pure and in memory, with the clock injected: each source's bucket holds up to ``burst``
tokens and refills at ``rate`` per second; a request takes one token or is told how long
to wait. The table of sources is bounded: a full bucket says nothing a new one would not,
so those go first, then the longest unused.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 10_000,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)) or burst < 1 or max_sources < 1:
            raise ValueError(f"rate limit: expected rate > 0, burst >= 1, max_sources >= 1; got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, source: str) -> float:
        """0.0 when ``source`` may go ahead (one token taken), else the seconds until it may."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.pop(source, None) or _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.updated) * self.rate)
            bucket.updated = now
            self._buckets[source] = bucket  # the most recently used last
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - bucket.tokens) / self.rate
            if len(self._buckets) > self.max_sources:
                self._shrink(now)
            return wait

    def sources(self) -> int:
        """How many sources are remembered now (bounded by ``max_sources``)."""
        with self._lock:
            return len(self._buckets)

    def _shrink(self, now: float) -> None:
        """Down to nine tenths of the bound, so a flood from many addresses pays for one
        sweep per tenth of the table rather than one per request."""
        target = max(1, self.max_sources * 9 // 10)
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full[: len(self._buckets) - target]:
            del self._buckets[key]
        while len(self._buckets) > target:
            self._buckets.popitem(last=False)
