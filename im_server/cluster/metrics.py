"""Prometheus metrics of one node, through ``prometheus_client``.

Each node has one :class:`Registry` around a ``CollectorRegistry`` of its own, never the library's global
default: several nodes in one process (tests, ``bench/``) then keep separate figures and never collide
over a name. ``GET /metrics`` renders it in the text exposition format (``text/plain; version=0.0.4``).

Counters end in ``_total``. Figures another component already keeps (routes in a registry copy, routes
reaped since start) are read when the metrics are rendered (:meth:`Registry.gauge`,
:meth:`Registry.read_counter`) rather than copied on every change. ``_created`` series are off: they
double the output and no dashboard uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "SIZE_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "LoopLagMonitor",
    "Registry",
]

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4"
"""The media type of :meth:`Registry.render`'s output."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds."""
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
"""Counts (sends per batch, recipients per publish)."""


class _ReadCounter(Collector):
    """A counter whose value another component keeps; read at each scrape, per label value if labelled."""

    def __init__(self, name: str, help: str, read: Callable[[], float | Mapping[str, float]], label: str | None):
        self._name = name
        self._help = help
        self._read = read
        self._label = label

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._help, labels=[self._label] if self._label else None)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        value = self._read()
        if isinstance(value, Mapping):
            for label_value, count in value.items():
                family.add_metric([label_value], count)
        else:
            family.add_metric([], value)
        return [family]


class Registry:
    """The metrics of one node; the ``prometheus_client`` objects it returns are observed directly."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        """A counter this node increments (``name`` ends in ``_total``)."""
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name}")
        return Counter(name, help, labelnames=labels, registry=self.registry)

    def read_counter(
        self, name: str, help: str, read: Callable[[], float | Mapping[str, float]], *, label: str | None = None
    ) -> None:
        """A counter kept elsewhere: ``read()`` gives its value, or one per value of ``label``."""
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name}")
        self.registry.register(_ReadCounter(name, help, read, label))

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> Gauge:
        """A value read when the metrics are rendered."""
        gauge = Gauge(name, help, registry=self.registry)
        gauge.set_function(read)
        return gauge

    def histogram(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        """Observations counted into ``buckets``."""
        return Histogram(name, help, buckets=buckets, registry=self.registry)

    def value(self, sample: str, **labels: str) -> float:
        """One sample's current value (``0.0`` if it has none yet), as a scrape would show it."""
        return self.registry.get_sample_value(sample, labels) or 0.0

    def render(self) -> str:
        """The text exposition format."""
        return generate_latest(self.registry).decode()


class LoopLagMonitor:
    """Measures how late the event loop runs a callback scheduled ``interval`` ahead.

    One sample a second: a stall shows up whenever it happens (the sample that spans it is late by as
    much), and an idle node does not wake up several times a second to measure nothing.
    """

    def __init__(self, histogram: Histogram, interval: float = 1.0) -> None:
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
