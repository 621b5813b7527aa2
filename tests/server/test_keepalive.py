"""The gateway's keepalive: one task pings the quiet connections; a peer that stops answering is closed."""

from __future__ import annotations

import asyncio

import websockets
from websockets.asyncio.server import ServerConnection, serve

from im_server.gateway.connection import LeanConnection
from im_server.gateway.keepalive import Keepalive


async def _until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_pings_quiet_connections_and_closes_the_one_that_stops_answering():
    connections: list[LeanConnection] = []

    async def handler(connection: ServerConnection) -> None:
        assert isinstance(connection, LeanConnection)
        connections.append(connection)
        await connection.wait_closed()

    closed: list[LeanConnection] = []
    loop = asyncio.get_running_loop()
    interval = 0.2
    async with serve(handler, "127.0.0.1", 0, ping_interval=None, create_connection=LeanConnection) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        alive = await websockets.connect(f"ws://127.0.0.1:{port}", ping_interval=None)
        silent = await websockets.connect(f"ws://127.0.0.1:{port}", ping_interval=None)
        await _until(lambda: len(connections) == 2)
        keepalive = Keepalive(lambda: connections, interval=interval, timeout=0.0, close=closed.append)

        await keepalive.sweep(0)  # one slice: every connection's turn; both were just heard from
        assert (keepalive.pings, keepalive.skipped) == (0, 2)

        await _until(lambda: all(loop.time() - c.heard > interval / 2 for c in connections))
        silent.transport.pause_reading()  # it never reads the ping, so it never answers
        reader = asyncio.create_task(alive.recv())  # reading lets websockets answer the ping
        await keepalive.sweep(0)
        assert keepalive.pings == 2
        by_alive = next(c for c in connections if c.remote_address[1] == alive.local_address[1])
        await _until(lambda: by_alive.heard > by_alive.pinged)  # its pong came back

        await keepalive.sweep(0)
        assert closed == [c for c in connections if c is not by_alive]
        assert keepalive.timeouts == 1
        assert by_alive.protocol.state is websockets.protocol.State.OPEN
        reader.cancel()
        await alive.close()
        silent.transport.resume_reading()
        await silent.close()


async def test_a_client_that_pings_on_its_own_is_never_pinged():
    connections: list[LeanConnection] = []

    async def handler(connection: ServerConnection) -> None:
        assert isinstance(connection, LeanConnection)
        connections.append(connection)
        await connection.wait_closed()

    loop = asyncio.get_running_loop()
    interval = 0.4
    async with serve(handler, "127.0.0.1", 0, ping_interval=None, create_connection=LeanConnection) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}", ping_interval=None) as client:
            await _until(lambda: len(connections) == 1)
            (connection,) = connections
            keepalive = Keepalive(lambda: connections, interval=interval, timeout=0.0, close=lambda c: None)
            for _ in range(3):
                await _until(lambda: loop.time() - connection.heard > interval / 4)
                await asyncio.wait_for(await client.ping(), 10)  # the client's own keepalive
                await keepalive.sweep(0)
            assert (keepalive.pings, keepalive.skipped, keepalive.timeouts) == (0, 3, 0)
