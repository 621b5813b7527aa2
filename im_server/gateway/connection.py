"""The gateway's WebSocket connection: websockets' ``ServerConnection`` holding less per connection.

A gateway keeps thousands of idle connections, so what each one holds is most of its memory. websockets
keeps, for the whole life of a connection, things that only the handshake needs or that are empty nearly
always:

- the handshake request and response with their headers (about 3 KB a connection): after the handshake
  the request is replaced by one shared, header-less request (websockets reads ``request`` to tell the
  handshake from later events, so it cannot be ``None``), and the response is dropped;
- two ``collections.deque`` objects, the queue of received frames and the waiters for a paused
  transport, empty unless a message is arriving or the client reads slowly: an empty deque allocates a
  block of 64 slots (about 620 bytes); a list holds nothing until it is used.

It also notes when it last heard from its peer (:attr:`LeanConnection.heard`, any bytes: a frame, a
ping, a pong), so that the gateway's keepalive pings only connections that have been quiet (see
``keepalive.py``).

Nothing else changes: received messages still queue up to ``max_queue`` frames, writes still pause at
``write_limit``, and every websockets feature the gateway uses works as before.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from typing import Any, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import State

__all__ = ["LeanConnection", "SmallQueue"]

T = TypeVar("T")

HANDSHAKE_DONE = Request("/ws", Headers())
"""What ``request`` holds once the handshake is over (the gateway serves WebSocket connections on
``/ws`` only; nothing reads the request's headers afterwards)."""


class SmallQueue(list[T]):
    """The part of ``collections.deque`` that websockets uses on its small queues, on a list.

    Empty, a list costs 56 bytes and a deque about 620. These queues hold a few items at most
    (``max_queue`` frames, the writers waiting for a paused transport), so ``pop(0)`` is as fast.
    """

    __slots__ = ()

    def popleft(self) -> T:
        """Remove and return the first item (``IndexError`` when empty, as a deque)."""
        return self.pop(0)

    def extendleft(self, items: Iterable[T]) -> None:
        """Put ``items`` at the front one by one, as ``deque.extendleft`` (so in reverse order)."""
        self[:0] = reversed(list(items))


class LeanConnection(ServerConnection):
    """A ``ServerConnection`` that drops its handshake's request and response once the handshake is
    over, and keeps its small queues on lists (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _replace_deque(self, "drain_waiters")
        self.heard = self.loop.time()
        """Event-loop time at which bytes last came from the peer."""
        self.pinged = 0.0
        """Event-loop time of the last keepalive ping (0: none yet)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """websockets makes the queue of received frames here."""
        super().connection_made(transport)
        _replace_deque(getattr(self.recv_messages, "frames", None), "queue")

    def data_received(self, data: bytes) -> None:
        """websockets parses the bytes; the time is noted for the keepalive."""
        self.heard = self.loop.time()
        super().data_received(data)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        """Run websockets' handshake, then let go of what only the handshake needed."""
        await super().handshake(*args, **kwargs)
        if self.protocol.state is State.OPEN:
            self.request = HANDSHAKE_DONE
            self.response = None


def _replace_deque(owner: object, name: str) -> None:
    # Only where websockets keeps the deque we know (a later version may keep something else there).
    current = getattr(owner, name, None)
    if isinstance(current, collections.deque) and not current:
        setattr(owner, name, SmallQueue())
