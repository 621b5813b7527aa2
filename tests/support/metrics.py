"""Scraping a test cluster's ``/metrics`` and reading the samples (the Prometheus text format parser)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import TestCluster

__all__ = ["METRICS_TOKEN", "Scrape", "gateway_base", "scrape", "scrape_until"]

METRICS_TOKEN = "m" * 24
"""The token tests start clusters with (``make_cluster(metrics_token=METRICS_TOKEN)``)."""


class Scrape:
    """One scrape: its metric families (name -> type) and its samples."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (0 when the series does not exist yet: a labelled counter never incremented)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series_names(self) -> set[str]:
        """Every series name a query may use: families plus their ``_total``/``_bucket``/``_sum``/``_count``."""
        names: set[str] = set()
        for name, kind in self.types.items():
            if kind == "counter":
                names.add(f"{name}_total")
            elif kind == "histogram":
                names.update({name, f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            else:
                names.add(name)
        names.update(name for name, _ in self.samples)
        return names


async def scrape(base: str) -> Scrape:
    """``GET {base}/metrics`` with the test token."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    response.raise_for_status()
    return Scrape(response.text)


async def scrape_until(base: str, predicate: Callable[[Scrape], bool], timeout: float = 10) -> Scrape:
    """Scrape until ``predicate`` holds (figures are updated right after the work they count)."""
    async with asyncio.timeout(timeout):
        while True:
            current = await scrape(base)
            if predicate(current):
                return current
            await asyncio.sleep(0.05)


def gateway_base(cluster: TestCluster, index: int = 0) -> str:
    """The HTTP base URL of a gateway (its ``/metrics`` and ``/healthz``)."""
    return cluster.gateways[index].url.replace("ws://", "http://").removesuffix("/ws")
