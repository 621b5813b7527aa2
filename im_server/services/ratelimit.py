"""Token buckets for send and connection rates."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["RateLimiter"]

K = TypeVar("K", bound=Hashable)


class RateLimiter(Generic[K]):
    """One token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[K, tuple[float, float]] = {}

    def acquire(self, key: K, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0 on success, else the seconds until they would be there."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        self._buckets[key] = (tokens - cost if allowed else tokens, now)
        if len(self._buckets) > self._max_keys:
            self._evict(now)
        if allowed:
            return 0.0
        return (cost - tokens) / self.rate if self.rate > 0 else float("inf")

    def _evict(self, now: float) -> None:
        # Buckets that have refilled completely carry no information.
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full_after]:
            del self._buckets[key]
        while len(self._buckets) > self._max_keys:
            del self._buckets[next(iter(self._buckets))]
