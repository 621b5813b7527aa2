"""A NATS link that dies without a reset (a frozen server, a lost network) is noticed by the node's pings.

The node reaches a real nats-server through a TCP relay that the test can freeze: bytes stop flowing
both ways, but neither socket is closed, which is what a half-open link looks like to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from im_server.bus.nats import Bus
from im_server.settings import Settings


class FreezableRelay:
    """Forwards TCP connections to ``port``; :meth:`freeze` stops every byte without closing anything."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    def freeze(self) -> None:
        self.flowing.clear()
        # Connections opened from now on are the client reconnecting: they go through.
        self._frozen_before = self.connections

    def thaw(self) -> None:
        self.flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        index = self.connections
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers += [writer, upstream_writer]
        for source, target in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, target, index))
            self._tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter, index: int) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                if not self.flowing.is_set() and index <= getattr(self, "_frozen_before", 0):
                    await asyncio.Event().wait()  # this connection is dead air from now on
                target.write(data)
                await target.drain()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def test_a_silent_nats_link_is_dropped_and_reconnected_within_a_few_pings(nats_server):
    relay = FreezableRelay(nats_server.port)
    url = await relay.start()
    settings = Settings(
        **{**nats_server.settings("api"), "nats_url": url},
        subject_prefix=f"t{secrets.token_hex(5)}",
        secret_key=secrets.token_urlsafe(32),
        nats_ping_interval=0.1,
        nats_max_outstanding_pings=2,
    )
    bus = Bus(settings, name="api-pinged")
    disconnected, reconnected = asyncio.Event(), asyncio.Event()
    try:
        await bus.connect()
        bus.listen(on_disconnect=disconnected.set, on_reconnect=reconnected.set)
        assert bus.nc.options["ping_interval"] == 0.1 and bus.nc.options["max_outstanding_pings"] == 2
        relay.freeze()
        # Nothing was closed: only the unanswered pings can tell the link is gone.
        async with asyncio.timeout(20):
            await disconnected.wait()
            await reconnected.wait()
        assert relay.connections >= 2 and bus.nc.is_connected
        await bus.nc.flush(timeout=5)  # the new link works
    finally:
        relay.thaw()
        await bus.close()
        await relay.close()
