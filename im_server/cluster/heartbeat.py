"""Node heartbeats into the node registry (a KV bucket whose entries expire after ``node_ttl``).

A node beats every ``heartbeat_interval``, and at once when its NATS connection comes back. When a beat
lands more than ``node_ttl`` after the previous one (NATS was away, or the event loop stalled), the
others may have judged the node dead in between (and removed its routes): ``on_gap`` is called so that
the node can put its state back and tell its clients to resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

import orjson

from ..bus.nats import Bus

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Puts ``{role, url, connections, started_at, pid}`` under the node id every ``interval`` seconds."""

    def __init__(
        self,
        bus: Bus,
        node_id: str,
        *,
        role: str,
        url: str | None,
        connections: Callable[[], int] = lambda: 0,
    ) -> None:
        self._bus = bus
        self.node_id = node_id
        self._role = role
        self._url = url
        self._connections = connections
        self._started_at = time.time()
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.last_ok: float | None = None
        """``time.monotonic()`` of the last heartbeat the registry accepted."""
        self.on_gap: Callable[[], None] | None = None
        """Called after a beat that followed a silence longer than the node TTL."""

    async def beat(self) -> None:
        """Write one heartbeat now."""
        value = orjson.dumps(
            {
                "role": self._role,
                "url": self._url,
                "connections": self._connections(),
                "started_at": self._started_at,
                "pid": os.getpid(),
            }
        )
        await self._bus.nodes.put(self.node_id, value)
        now = time.monotonic()
        previous, self.last_ok = self.last_ok, now
        if previous is not None and now - previous >= self._bus.settings.node_ttl and self.on_gap is not None:
            log.warning(
                "node %s: %.1fs without a heartbeat; others may have judged it dead", self.node_id, now - previous
            )
            self.on_gap()

    def beat_soon(self) -> None:
        """Beat now rather than at the next interval (after a reconnect, say)."""
        self._wakeup.set()

    async def start(self) -> None:
        """Beat once (so the node is known before it serves), then keep beating."""
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self.node_id}")

    async def _run(self) -> None:
        interval = self._bus.settings.heartbeat_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), interval)
            self._wakeup.clear()
            try:
                await self.beat()
            except Exception as exc:
                log.warning("node %s: heartbeat failed: %s", self.node_id, exc)

    async def stop(self) -> None:
        """Stop beating and remove the node from the registry."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._bus.nodes.delete(self.node_id)
