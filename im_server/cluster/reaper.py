"""Noticing dead gateways fast, and removing their routes.

**Detection.** A gateway heartbeats every ``heartbeat_interval``; it is dead once its heartbeat is older
than ``node_ttl``. A gateway whose heartbeat is merely late is probed at once: a NATS request on its
delivery subject. NATS answers "no responders" straight away when nothing subscribes to that subject
any more, which is the case as soon as the gateway's process is gone (its connection closes and NATS
drops its subscriptions), so a killed gateway is known dead well before its TTL. A timeout says
nothing (the gateway is alive but busy: it is subscribed, and does not answer probes); the TTL decides
then. No system account is needed.

**Routes.** A gateway that stops removes its own routes; one that crashes (SIGKILL, a lost machine)
cannot. Once a node has been dead for ``grace`` seconds, one API node, chosen by rendezvous hashing of
the dead node's id over the live API nodes, deletes every route still pointing at it. Each delete names
the revision the route had when the dead node's routes were listed, so a route that the node (or
another one) put again meanwhile is never removed, even once the view shows the newer one.

A node wrongly judged dead (cut off from NATS, or its event loop stalled) notices the gap in its own
heartbeats, puts its routes back and tells its clients to resync (see ``GatewayNode``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.errors import NoRespondersError

from ..bus.nats import Bus, RegistryMirror
from ..bus.routes import rendezvous
from ..bus.subjects import route_key

__all__ = ["PROBE", "RouteReaper"]

log = logging.getLogger(__name__)

PROBE = b"probe"
"""The payload of a liveness probe on a gateway's delivery subject (gateways ignore it)."""


class RouteReaper:
    """Runs on every API node; each dead node's routes are reaped by one of them."""

    def __init__(self, bus: Bus, mirror: RegistryMirror, node_id: str) -> None:
        self._bus = bus
        self._mirror = mirror
        self._node_id = node_id
        settings = bus.settings
        self.interval = settings.heartbeat_interval / 2
        self.grace = max(settings.heartbeat_interval, settings.node_ttl / 2)
        self.late = settings.heartbeat_interval * 1.2
        """A gateway whose heartbeat is this old is probed."""
        self.probed_dead = 0
        """Gateways found dead by a probe, before their TTL (since start)."""
        self._probing: set[str] = set()
        self._probes: set[asyncio.Task[None]] = set()
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
        for task in [self._task, *self._probes]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

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
        self._probe_late()
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

    def _probe_late(self) -> None:
        for info, age in self._mirror.nodes.all():
            if (
                info.role == "gateway"
                and self.late <= age < self._mirror.nodes.ttl
                and info.node_id not in self._probing
            ):
                self._probing.add(info.node_id)
                task = asyncio.create_task(self._probe(info.node_id))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)

    async def _probe(self, node: str) -> None:
        try:
            await self._bus.nc.request(self._bus.subjects.gateway(node), PROBE, timeout=self.interval)
        except NoRespondersError:
            if self._bus.nc.is_connected and self._mirror.current:
                log.warning("node %s: heartbeat late and nothing subscribes to its subject: dead", node)
                self.probed_dead += 1
                self._mirror.nodes.remove(node)
                self._mirror.departed.setdefault(node, time.monotonic())
        except Exception:
            pass  # a timeout: the node is subscribed (alive, maybe busy); its TTL decides
        finally:
            self._probing.discard(node)

    async def _reap(self, node: str) -> int:
        # Each route's revision is read now, with the route: the deletes take a while (one round trip per
        # batch), and a device that reconnects elsewhere meanwhile has a newer revision in the view by the
        # time its delete is sent. Naming that one (or none, if the view dropped the route) would remove
        # the device's new route: it would stay connected but be pushed nothing until some later resync.
        revisions = self._mirror.route_revisions
        devices = [
            (user, device, revision)
            for user, device in self._mirror.routes.on_node(node)
            if (revision := revisions.get((user, device)))
        ]

        async def delete(user: int, device: str, revision: int) -> bool:
            try:
                await self._bus.routes.delete(route_key(user, device), last=revision)
            except Exception as exc:
                log.debug("route %s.%s of %s not removed: %s", user, device, node, exc)
                return False
            return True

        removed = 0
        for start in range(0, len(devices), 256):
            results = await asyncio.gather(*(delete(*route) for route in devices[start : start + 256]))
            removed += sum(results)
        if devices:
            log.warning("node %s is dead: removed %d of its %d routes", node, removed, len(devices))
        self.reaped += removed
        return removed
