"""im_server.services.ratelimit.RateLimiter, on an injected clock."""

from __future__ import annotations

import math

import pytest

from im_server.services.ratelimit import RateLimiter


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def test_a_full_bucket_allows_a_burst(clock):
    limiter = RateLimiter(rate=1.0, burst=5, clock=clock)
    assert [limiter.acquire("a") for _ in range(5)] == [0.0] * 5
    assert limiter.acquire("a") == pytest.approx(1.0)


def test_wait_says_when_the_next_token_is_there(clock):
    limiter = RateLimiter(rate=4.0, burst=2, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    assert limiter.acquire("a") == pytest.approx(0.25)
    clock.advance(0.1)
    assert limiter.acquire("a") == pytest.approx(0.15)
    clock.advance(0.15)
    assert limiter.acquire("a") == 0.0


def test_refused_attempts_do_not_spend_tokens(clock):
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.acquire("a") == 0.0
    for _ in range(10):
        assert limiter.acquire("a") > 0
    clock.advance(1.0)
    assert limiter.acquire("a") == 0.0


def test_tokens_refill_at_the_rate_up_to_the_burst(clock):
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.acquire("a")
    clock.advance(1.0)  # two tokens back
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") > 0
    clock.advance(3600)  # refills, but never beyond the burst
    assert [limiter.acquire("a") for _ in range(3)] == [0.0] * 3
    assert limiter.acquire("a") > 0


def test_sustained_rate(clock):
    limiter = RateLimiter(rate=8.0, burst=1, clock=clock)
    allowed = 0
    for _ in range(640):  # 10 seconds, an attempt every 1/64 s (exact in binary floating point)
        if limiter.acquire("a") == 0.0:
            allowed += 1
        clock.advance(1 / 64)
    assert allowed == 80


def test_keys_are_independent(clock):
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.acquire(1) == 0.0
    assert limiter.acquire(1) > 0
    assert limiter.acquire(2) == 0.0
    assert limiter.acquire((3, "laptop")) == 0.0


def test_cost(clock):
    limiter = RateLimiter(rate=1.0, burst=10, clock=clock)
    assert limiter.acquire("a", cost=7) == 0.0
    assert limiter.acquire("a", cost=4) == pytest.approx(1.0)
    assert limiter.acquire("a", cost=3) == 0.0


def test_a_cost_over_the_burst_is_never_allowed(clock):
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    clock.advance(10**6)
    assert limiter.acquire("a", cost=3) > 0


def test_zero_rate_never_refills(clock):
    limiter = RateLimiter(rate=0.0, burst=1, clock=clock)
    assert limiter.acquire("a") == 0.0
    clock.advance(10**6)
    assert math.isinf(limiter.acquire("a"))


def test_a_clock_going_backwards_gives_no_tokens(clock):
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    limiter.acquire("a")
    clock.advance(-100)
    assert limiter.acquire("a") > 0


def test_full_buckets_are_evicted_beyond_max_keys(clock):
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        limiter.acquire(key)
    clock.advance(5)  # a, b and c are full again
    limiter.acquire("x")
    limiter.acquire("d")
    assert len(limiter._buckets) <= 3
    # Evicting a full bucket loses nothing: the key starts full again.
    assert limiter.acquire("a") == 0.0


def test_eviction_keeps_the_table_bounded_under_churn(clock):
    limiter = RateLimiter(rate=0.001, burst=1, max_keys=50, clock=clock)
    for key in range(1000):
        limiter.acquire(key)
        clock.advance(0.001)
    assert len(limiter._buckets) <= 50
    # The newest keys are still limited.
    assert limiter.acquire(999) > 0
