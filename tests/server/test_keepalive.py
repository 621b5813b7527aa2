"""The gateway's keepalive: one task pings every connection; a peer that stops answering is closed."""

from __future__ import annotations

import asyncio

import websockets
from websockets.asyncio.server import ServerConnection, serve

from im_server.gateway.keepalive import Keepalive


async def _until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_pings_each_connection_and_closes_the_one_that_stops_answering():
    connections: list[ServerConnection] = []

    async def handler(connection: ServerConnection) -> None:
        connections.append(connection)
        await connection.wait_closed()

    closed: list[ServerConnection] = []
    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        alive = await websockets.connect(f"ws://127.0.0.1:{port}", ping_interval=None)
        silent = await websockets.connect(f"ws://127.0.0.1:{port}", ping_interval=None)
        await _until(lambda: len(connections) == 2)
        keepalive = Keepalive(lambda: connections, interval=1.0, timeout=0.0, close=closed.append)

        await keepalive.sweep(0)  # one slice: every connection's turn
        assert keepalive.pings == 2
        silent.transport.pause_reading()  # it never reads the ping, so it never answers
        reader = asyncio.create_task(alive.recv())  # reading lets websockets answer the ping
        by_alive = next(c for c in connections if c.remote_address[1] == alive.local_address[1])
        await _until(lambda: not by_alive.pending_pings)

        await keepalive.sweep(0)
        assert closed == [c for c in connections if c is not by_alive]
        assert keepalive.timeouts == 1
        assert keepalive.pings == 3  # the one that answered is pinged again
        reader.cancel()
        await alive.close()
        silent.transport.resume_reading()
        await silent.close()
