"""Prometheus metrics in the text exposition format, without dependencies.

Each node has one :class:`Registry`; ``GET /metrics`` renders it. Histograms use fixed buckets (seconds
or counts) and are cheap to observe: one bisect and two additions.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["Counter", "Gauge", "Histogram", "LoopLagMonitor", "Registry"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help: str) -> None:
        self.name = name
        self.help = help

    @abc.abstractmethod
    def samples(self) -> list[str]:
        """The sample lines of this metric."""

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self.samples()]
        return "\n".join(lines)


_M = TypeVar("_M", bound=_Metric)


class Counter(_Metric):
    """A count that only goes up."""

    kind = "counter"

    def __init__(self, name: str, help: str) -> None:
        super().__init__(name, help)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def samples(self) -> list[str]:
        return [f"{self.name} {self.value:g}"]


class Gauge(_Metric):
    """A value read when the metrics are rendered."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], float]) -> None:
        super().__init__(name, help)
        self._read = read

    def samples(self) -> list[str]:
        return [f"{self.name} {self._read():g}"]


class Histogram(_Metric):
    """Observations counted into buckets."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help)
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def quantile(self, fraction: float) -> float:
        """An upper bound of the ``fraction`` quantile (the bucket boundary it falls under)."""
        if not self.count:
            return 0.0
        target = fraction * self.count
        seen = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            seen += count
            if seen >= target:
                return bound
        return float("inf")

    def samples(self) -> list[str]:
        lines = []
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.total:g}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Registry:
    """The metrics of one node."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def counter(self, name: str, help: str) -> Counter:
        return self._add(Counter(name, help))

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> Gauge:
        return self._add(Gauge(name, help, read))

    def histogram(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, buckets))

    def _add(self, metric: _M) -> _M:
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        """The text exposition format."""
        return "\n".join(metric.render() for metric in self._metrics.values()) + "\n"


class LoopLagMonitor:
    """Measures how late the event loop runs a callback scheduled ``interval`` ahead."""

    def __init__(self, histogram: Histogram, interval: float = 0.05) -> None:
        self._histogram = histogram
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self._interval)
            self._histogram.observe(max(0.0, time.perf_counter() - started - self._interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
