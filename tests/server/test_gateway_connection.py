"""The gateway's lean WebSocket connection: less kept per connection, the same behaviour."""

from __future__ import annotations

import asyncio
import collections

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from im_server.gateway.connection import HANDSHAKE_DONE, LeanConnection, SmallQueue


def test_small_queue_behaves_as_the_deque_operations_websockets_uses():
    queue: SmallQueue[int] = SmallQueue()
    reference: collections.deque[int] = collections.deque()
    for target in (queue, reference):
        target.append(1)
        target.append(2)
        target.extendleft(reversed([8, 9]))  # websockets' put_back: the items back at the front, in order
        target.append(3)
    assert list(queue) == list(reference) == [8, 9, 1, 2, 3]
    assert [queue.popleft() for _ in range(5)] == [reference.popleft() for _ in range(5)]
    assert not queue
    with pytest.raises(IndexError):  # as a deque's
        queue.popleft()


async def test_lets_go_of_the_handshake_and_still_queues_and_pauses():
    opened: asyncio.Queue[ServerConnection] = asyncio.Queue()
    received: list[str] = []
    release = asyncio.Event()

    async def handler(connection: ServerConnection) -> None:
        await opened.put(connection)
        await release.wait()  # messages queue up (past max_queue: reading from the client pauses)
        async for message in connection:
            received.append(str(message))
            if message == "last":
                await connection.send("done")

    async with serve(
        handler, "127.0.0.1", 0, create_connection=LeanConnection, max_queue=2, write_limit=1024, ping_interval=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}", ping_interval=None, max_size=None) as client:
            connection = await asyncio.wait_for(opened.get(), 10)
            assert isinstance(connection, LeanConnection)
            assert connection.request is HANDSHAKE_DONE and not connection.request.headers
            assert connection.response is None
            assert isinstance(connection.drain_waiters, SmallQueue)
            assert isinstance(connection.recv_messages.frames.queue, SmallQueue)

            messages = [f"m{i}" for i in range(20)] + ["last"]
            for message in messages:
                await client.send(message)
            release.set()
            async with asyncio.timeout(10):
                while len(received) < len(messages):
                    await asyncio.sleep(0.01)
            assert received == messages

            assert await asyncio.wait_for(client.recv(), 10) == "done"

            # The transport's buffer passed its high-water mark (what asyncio calls when a client stops
            # reading): a send waits for it to drain, then goes on.
            connection.pause_writing()
            sending = asyncio.create_task(connection.send("after the pause"))
            async with asyncio.timeout(10):
                while not connection.drain_waiters:
                    await asyncio.sleep(0.01)
            assert not sending.done()
            connection.resume_writing()
            await asyncio.wait_for(sending, 10)
            assert not connection.drain_waiters
            assert await asyncio.wait_for(client.recv(), 10) == "after the pause"


async def test_a_refused_handshake_is_answered_as_before():
    def refuse(connection: ServerConnection, request: websockets.http11.Request) -> websockets.http11.Response:
        return connection.respond(403, "no\n")

    async with serve(
        lambda connection: connection.wait_closed(),
        "127.0.0.1",
        0,
        create_connection=LeanConnection,
        process_request=refuse,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{port}")
        assert refused.value.response.status_code == 403
