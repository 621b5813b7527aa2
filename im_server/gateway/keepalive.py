"""Keepalive pings for every connection of a gateway, from one task instead of a timer per connection.

websockets runs a keepalive task per connection (a coroutine that sleeps, pings and waits for the pong):
thousands of idle connections mean thousands of tasks waking up on their own schedules, and the memory
of each task. Here one task goes round the connections in slices (about one a second), so that each
connection's turn comes once per ``interval``: as often as the proxies in front of the gateways need to
keep an idle connection open (60 s idle timeouts are common).

A connection that was heard from (any bytes: a message, the client's own ping, the pong of our last
ping) within the last half ``interval`` is not pinged: it is alive, and traffic crossed the proxies
lately. So the SDK's clients, which ping every 20 s, are never pinged, and no connection goes more than
about 1.5 ``interval`` without traffic. A quiet connection gets a ping: two bytes written straight to its
transport (an empty ping frame, encoded once), whose pong counts as hearing from it. One that has not
been heard from ``timeout`` seconds after its ping when its turn comes again is closed (1011), as
websockets' own keepalive does: a dead peer is noticed within about two ``interval`` s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from websockets.protocol import State

from .connection import LeanConnection

__all__ = ["Keepalive"]

log = logging.getLogger(__name__)

MAX_SLICES = 60
"""The most slices a round is cut into (one sweep a second at the default interval)."""

PING_FRAME = b"\x89\x00"
"""A server's ping frame with no payload (final, opcode 9, unmasked, length 0)."""


class Keepalive:
    """Pings the connections ``connections()`` returns, each once per ``interval`` seconds.

    ``close(connection)`` is called for a connection that did not answer within ``timeout``.
    """

    def __init__(
        self,
        connections: Callable[[], Iterable[LeanConnection]],
        *,
        interval: float,
        timeout: float,
        close: Callable[[LeanConnection], None],
    ) -> None:
        self._connections = connections
        self._interval = interval
        self._timeout = timeout
        self._close = close
        self._slices = max(1, min(MAX_SLICES, round(interval)))
        self._task: asyncio.Task[None] | None = None
        self.pings = 0
        """Pings sent."""
        self.skipped = 0
        """Turns on which a connection heard from lately was not pinged."""
        self.timeouts = 0
        """Connections closed because a ping went unanswered."""

    def start(self) -> None:
        """Start going round."""
        self._task = asyncio.create_task(self._run(), name="keepalive")

    async def stop(self) -> None:
        """Stop pinging."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        step = self._interval / self._slices
        index = 0
        while True:
            await asyncio.sleep(step)
            try:
                await self.sweep(index)
            except Exception:
                log.exception("keepalive sweep failed")
            index = (index + 1) % self._slices

    async def sweep(self, index: int) -> None:
        """Ping the quiet connections of slice ``index`` (a connection's slice comes from its random id)."""
        slices = self._slices
        now = asyncio.get_running_loop().time()
        recent = now - self._interval / 2
        for connection in [c for c in self._connections() if c.id.int % slices == index]:
            if connection.protocol.state is not State.OPEN:
                continue
            heard = connection.heard
            if heard > connection.pinged:
                if heard >= recent:
                    self.skipped += 1
                    continue  # heard from lately: alive, and the proxies saw traffic
            elif now - connection.pinged > self._timeout:
                self.timeouts += 1
                self._close(connection)
                continue
            else:
                continue  # pinged, and the pong may still come
            transport = connection.transport
            if transport.is_closing():
                continue
            # Between whole frames (websockets writes a frame at once), so valid at any moment; a control
            # frame may even come between the fragments of a message. websockets ignores the pong (it
            # matches none of its own pings); data_received notes it as hearing from the peer.
            transport.write(PING_FRAME)
            connection.pinged = now
            self.pings += 1
