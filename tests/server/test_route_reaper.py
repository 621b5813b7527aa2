"""Reaping a dead gateway's routes never removes the route of a device that has just moved elsewhere.

Real nats-server and registry. The reaper's NATS link goes through a relay that the test can hold (bytes
wait, nothing is dropped), so the moment between listing the dead node's routes and deleting them is
held open while a device reconnects on a live gateway, with no timing involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable

from im_server.bus.nats import Bus, RegistryMirror
from im_server.bus.subjects import route_key
from im_server.cluster.reaper import RouteReaper
from im_server.settings import Settings

DEVICES = 300
"""More than one batch of deletes (256), so that the last routes are deleted after a round trip."""


class HoldingRelay:
    """Forwards TCP connections to ``port``; while held, bytes from the client wait (none is dropped)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.held_bytes = 0
        """Bytes the client sent while held."""
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers += [writer, upstream_writer]
        for source, target, outbound in ((reader, upstream_writer, True), (upstream_reader, writer, False)):
            self._tasks.add(asyncio.create_task(self._pump(source, target, outbound)))

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter, outbound: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                if outbound and not self.flowing.is_set():
                    self.held_bytes += len(data)
                    self.arrived.set()
                    await self.flowing.wait()
                target.write(data)
                await target.drain()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def _until(condition: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_device_that_moves_while_its_dead_node_is_reaped_keeps_its_new_route(nats_server):
    prefix = f"t{secrets.token_hex(5)}"
    common = {"subject_prefix": prefix, "secret_key": secrets.token_urlsafe(32)}
    relay = HoldingRelay(nats_server.port)
    relayed = await relay.start()
    api = Bus(Settings(**nats_server.settings("api"), **common), name="api-view")
    reaping = Bus(Settings(**{**nats_server.settings("api"), "nats_url": relayed}, **common), name="api-reaper")
    gateway = Bus(Settings(**nats_server.settings("gateway", "gw-live"), **common), name="gw-live", role="gateway")
    mirror = RegistryMirror(api)
    try:
        await api.connect()
        await reaping.connect()
        await gateway.connect()
        await mirror.start()
        # gw-dead had DEVICES devices when it was killed; their routes are still in the registry.
        last = 0
        for user in range(1, DEVICES + 1):
            last = await api.routes.put(route_key(user, "phone"), b"gw-dead")
        await mirror.wait_for_routes(last)
        assert len(mirror.routes.on_node("gw-dead")) == DEVICES
        reaper = RouteReaper(reaping, mirror, "api-1")

        # The reaper lists gw-dead's routes and sends its first batch of deletes, which wait in the relay.
        relay.flowing.clear()
        reap = asyncio.create_task(reaper._reap("gw-dead"))
        async with asyncio.timeout(20):
            await relay.arrived.wait()
        # Meanwhile the last device (deleted in the second batch) reconnects on gw-live, and every API
        # node routes to it there (the gateway's route barrier passes: it sends ready, the device syncs).
        moved = await gateway.routes.put(route_key(DEVICES, "phone"), b"gw-live")
        async with asyncio.timeout(20):
            await mirror.wait_for_routes(moved)
        assert mirror.routes.devices(DEVICES) == {"phone": "gw-live"}
        relay.flowing.set()
        async with asyncio.timeout(30):
            removed = await reap

        # Every route of gw-dead is gone; the moved device's new route is not (messages reach it).
        assert removed == DEVICES - 1
        entry = await api.routes.get(route_key(DEVICES, "phone"))
        assert entry.value == b"gw-live" and entry.revision == moved
        await _until(lambda: not mirror.routes.on_node("gw-dead"))
        assert mirror.routes.devices(DEVICES) == {"phone": "gw-live"}
        assert len(mirror.routes) == 1
    finally:
        with contextlib.suppress(Exception):
            await mirror.stop()
        for bus in (gateway, reaping, api):
            with contextlib.suppress(Exception):
                await bus.close()
        relay.flowing.set()
        await relay.close()
