"""Rate limits: token buckets (sends, connections, edits, frames), failure backoff (logins), and a
bounded work queue (password hashing).

Everything here is in memory and per process; what must hold across API nodes (an account's login
failures) lives in the database (:mod:`im_server.storage.entrance`) and uses :class:`Backoff` as policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Backoff", "BusyError", "FailureTracker", "RateLimiter", "TokenBucket", "WorkLimiter"]

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


class TokenBucket:
    """One token bucket (a connection's frame rate): ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0 on success, else the seconds until they would be there."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Backoff:
    """How failures in a row turn into waits: ``free`` cost nothing, then ``first`` seconds, doubling with
    each further failure up to ``longest``."""

    free: int
    first: float
    longest: float

    def wait(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        over = failures - self.free
        if over <= 0:
            return 0.0
        return min(self.longest, self.first * 2.0 ** min(over - 1, 60))

    def wait_ms(self, failures: int) -> int:
        """:meth:`wait` in whole milliseconds."""
        return int(self.wait(failures) * 1000)


class FailureTracker(Generic[K]):
    """Failures in a row per key (a client address), in memory, with :class:`Backoff` waits.

    A key's record is forgotten ``ttl`` seconds after its last failure; at most ``max_keys`` are kept
    (the oldest go first), so a flood of addresses costs bounded memory.
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        ttl: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff
        self._ttl = ttl
        self._max_keys = max_keys
        self._clock = clock
        self._records: OrderedDict[K, tuple[int, float, float]] = OrderedDict()
        """key -> (failures, last failure, wait until)."""

    def wait(self, key: K) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        now = self._clock()
        if now - record[1] >= self._ttl:
            del self._records[key]
            return 0.0
        return max(0.0, record[2] - now)

    def failed(self, key: K) -> float:
        """Count a failure; returns the wait it earned."""
        now = self._clock()
        failures, last, _ = self._records.pop(key, (0, now, now))
        if now - last >= self._ttl:
            failures = 0
        failures += 1
        wait = self.backoff.wait(failures)
        self._records[key] = (failures, now, now + wait)
        while len(self._records) > self._max_keys:
            self._records.popitem(last=False)
        return wait

    def succeeded(self, key: K) -> None:
        """Forget ``key``'s failures."""
        self._records.pop(key, None)


class BusyError(Exception):
    """Every slot is taken and the queue is full."""


class WorkLimiter:
    """At most ``concurrency`` jobs at once and at most ``queue`` waiting; past that, :class:`BusyError`.

    Bounds expensive work (Argon2 takes tens of MiB per hash) so that a flood of logins queues briefly
    and is then refused, instead of exhausting memory or the threads everything else needs.
    """

    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self._semaphore = asyncio.Semaphore(concurrency)
        self.waiting = 0
        """Jobs waiting for a slot now."""
        self.running = 0
        """Jobs holding a slot now."""

    @property
    def full(self) -> bool:
        """Whether a job started now would be refused."""
        return self._semaphore.locked() and self.waiting >= self.queue

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block; raises :class:`BusyError` if the queue is full."""
        if self._semaphore.locked():
            if self.full:
                raise BusyError(f"{self.running} running, {self.waiting} waiting")
            self.waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._semaphore.release()
