"""Keepalive pings for every connection of a gateway, from one task instead of a timer per connection.

websockets runs a keepalive task per connection (a coroutine that sleeps, pings and waits for the pong):
thousands of idle connections mean thousands of tasks waking up on their own schedules, and the memory
of each task. Here one task goes round the connections in slices (about one a second), so that each
connection is pinged once per ``interval``: as often as the proxies in front of the gateways need to keep
an idle connection open (60 s idle timeouts are common), and a dead peer is noticed within about
``interval + timeout``. A connection whose ping went unanswered for ``timeout`` seconds when its turn
comes again is closed (1011), as websockets' own keepalive does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

__all__ = ["Keepalive"]

log = logging.getLogger(__name__)

MAX_SLICES = 60
"""The most slices a round is cut into (one sweep a second at the default interval)."""


def _retrieve(future: asyncio.Future[float]) -> None:
    # Nobody awaits the pong: read a ConnectionClosed set on it, so that asyncio does not log it.
    if not future.cancelled():
        future.exception()


class Keepalive:
    """Pings the connections ``connections()`` returns, each once per ``interval`` seconds.

    ``close(connection)`` is called for a connection that did not answer within ``timeout``.
    """

    def __init__(
        self,
        connections: Callable[[], Iterable[ServerConnection]],
        *,
        interval: float,
        timeout: float,
        close: Callable[[ServerConnection], None],
    ) -> None:
        self._connections = connections
        self._interval = interval
        self._timeout = timeout
        self._close = close
        self._slices = max(1, min(MAX_SLICES, round(interval)))
        self._task: asyncio.Task[None] | None = None
        self.pings = 0
        """Pings sent."""
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
        """Ping the connections of slice ``index`` (a connection's slice comes from its random id)."""
        slices = self._slices
        now = asyncio.get_running_loop().time()
        for connection in [c for c in self._connections() if c.id.int % slices == index]:
            if connection.protocol.state is not State.OPEN:
                continue
            pending = connection.pending_pings
            if pending:
                if any(now - sent > self._timeout for _, sent in pending.values()):
                    self.timeouts += 1
                    self._close(connection)
                continue  # still waiting for the pong of the last round
            try:
                waiter = await connection.ping()
            except ConnectionClosed:
                continue
            if isinstance(waiter, asyncio.Future):  # it is one (websockets declares an Awaitable)
                waiter.add_done_callback(_retrieve)
            self.pings += 1
