"""Removing the routes of dead gateways.

A gateway that stops removes its own routes; one that crashes (SIGKILL, a lost machine) cannot. API
nodes watch the node registry: once a node has been without a fresh heartbeat for ``grace`` seconds
(after the node TTL that made it dead), one API node, chosen by rendezvous hashing of the dead node's
id over the live API nodes, deletes every route still pointing at it. Each delete names the revision it
saw, so a route that the node (or another one) put again meanwhile is never removed.

A node wrongly judged dead (cut off from NATS, or its event loop stalled) notices the gap in its own
heartbeats, puts its routes back and tells its clients to resync (see ``GatewayNode``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..bus.nats import Bus, RegistryMirror
from ..bus.routes import rendezvous
from ..bus.subjects import route_key

__all__ = ["RouteReaper"]

log = logging.getLogger(__name__)


class RouteReaper:
    """Runs on every API node; each dead node's routes are reaped by one of them."""

    def __init__(self, bus: Bus, mirror: RegistryMirror, node_id: str) -> None:
        self._bus = bus
        self._mirror = mirror
        self._node_id = node_id
        settings = bus.settings
        self.interval = settings.heartbeat_interval
        self.grace = max(settings.heartbeat_interval, settings.node_ttl / 2)
        self.reaped = 0
        """Routes removed (since start)."""
        self._dead_since: dict[str, float] = {}
        self._done: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Note nodes that routes point at but the registry does not know, then check every interval."""
        known = set(self._mirror.nodes.known())
        now = time.monotonic()
        for user in self._mirror.routes.users():
            for node in self._mirror.routes.devices(user).values():
                if node not in known:
                    self._mirror.departed.setdefault(node, now)
        self._task = asyncio.create_task(self._run(), name="route-reaper")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:
                log.warning("route reaper: %s", exc)

    async def check(self) -> int:
        """One pass; returns the number of routes removed."""
        mirror = self._mirror
        if not self._bus.nc.is_connected or not mirror.current or mirror.nodes.frozen:
            return 0  # judge nobody while our own view is not current
        nodes = mirror.nodes
        live = {info.node_id for info in nodes.live()}
        candidates = (set(mirror.departed) | set(nodes.known())) - live
        for node in list(self._dead_since):
            if node not in candidates:
                del self._dead_since[node]
        self._done &= candidates
        apis = [info.node_id for info in nodes.live("api")]
        now = time.monotonic()
        removed = 0
        for node in candidates - self._done:
            since = self._dead_since.setdefault(node, now)
            if now - since < self.grace:
                continue
            self._done.add(node)
            mirror.departed.pop(node, None)
            if apis and rendezvous(node, apis) != self._node_id:
                continue  # another API node reaps this one
            removed += await self._reap(node)
        return removed

    async def _reap(self, node: str) -> int:
        devices = self._mirror.routes.on_node(node)
        revisions = self._mirror.route_revisions

        async def delete(user: int, device: str) -> bool:
            try:
                await self._bus.routes.delete(route_key(user, device), last=revisions.get((user, device)))
            except Exception as exc:
                log.debug("route %s.%s of %s not removed: %s", user, device, node, exc)
                return False
            return True

        removed = 0
        for start in range(0, len(devices), 256):
            results = await asyncio.gather(*(delete(user, device) for user, device in devices[start : start + 256]))
            removed += sum(results)
        if devices:
            log.warning("node %s is dead: removed %d of its %d routes", node, removed, len(devices))
        self.reaped += removed
        return removed
