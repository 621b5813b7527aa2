"""Reconnect delays: exponential, capped, with full jitter, reset after a good connection."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delays before reconnect attempts.

    The first delay is random in ``[0, initial]`` so that many clients dropped at once (a gateway
    restart) do not come back in one wave; each next bound grows by ``factor`` up to ``max_delay``.
    Pass ``Backoff(initial=0, max_delay=0)`` in tests to reconnect at once.
    """

    initial: float = 1.0
    factor: float = 1.618
    max_delay: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("initial and max_delay must be >= 0 and factor >= 1")

    def delays(self) -> Iterator[float]:
        """An endless run of delays for one outage."""
        bound = min(self.initial, self.max_delay)
        while True:
            yield random.uniform(0, bound) if self.jitter else bound
            bound = min(self.max_delay, bound * self.factor if bound else self.max_delay)
