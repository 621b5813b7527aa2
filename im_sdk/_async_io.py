"""The I/O primitives of the asynchronous client: asyncio, and websockets' asyncio client.

:mod:`im_sdk._sync_io` offers the same names, blocking. The blocking client is generated from the
asynchronous source by ``tools/unasync.py``, which turns ``_async_io`` into ``_sync_io``; so every
difference between the twins that is not ``async``/``await`` or a renamed class lives in these two
modules, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeAlias, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from im_schema.models import Message

from ._files import Progress, Spool

__all__ = [
    "ClientConnection",
    "Lock",
    "Reply",
    "chunks",
    "open_gateway",
    "receive",
    "sleep",
    "to_thread",
    "wait_closed",
]

P = ParamSpec("P")
T = TypeVar("T")

Reply: TypeAlias = Coroutine[Any, Any, Message]
"""What ``event.reply(...)`` returns on this client: a coroutine to await."""

Lock = asyncio.Lock
"""The lock that keeps concurrent calls from refreshing the same token twice."""


async def sleep(seconds: float) -> None:
    """Pause this task (looked up at each call, so that tests can replace :func:`asyncio.sleep`)."""
    await asyncio.sleep(seconds)


async def to_thread(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking file work off the event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def chunks(spool: Spool, progress: Progress | None) -> AsyncIterator[bytes]:
    """An upload's body, piece by piece, read in a thread."""
    while chunk := await asyncio.to_thread(spool.read):
        spool.advance(chunk, progress)
        yield chunk


async def open_gateway(url: str) -> ClientConnection:
    """Open a gateway connection (with keepalive pings, so that a dead peer is noticed)."""
    return await connect(url, compression=None, open_timeout=10, max_size=2**22, ping_interval=20)


async def receive(connection: ClientConnection, within: float | None) -> str | bytes:
    """The next frame; raises :class:`TimeoutError` when none came ``within`` seconds (never, if ``None``)."""
    # Cancelling recv() is safe in websockets' asyncio client: no frame is lost. asyncio.timeout, not
    # wait_for: on Python 3.11 wait_for can swallow a cancellation that races with a frame arriving,
    # and a consumer that closes events() (a bot stopping) would then wait for the next frame forever.
    async with asyncio.timeout(within):
        return await connection.recv()


async def wait_closed(connection: ClientConnection) -> None:
    """Wait until the server has closed the connection."""
    with contextlib.suppress(ConnectionClosed):
        await connection.wait_closed()
