"""Collecting what a client's ``events()`` yields, for assertions."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from im_sdk import AsyncClient, MessageEvent


class Inbox:
    """Runs ``client.events()`` in a task; messages queue apart from every other event (notices, reads,
    recalls, edits, typing, presence)."""

    def __init__(self, client: AsyncClient, **events_args: Any) -> None:
        self.client = client
        self.queue: asyncio.Queue[MessageEvent[Any]] = asyncio.Queue()
        self.notices: asyncio.Queue[Any] = asyncio.Queue()
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run(events_args))

    async def _run(self, events_args: dict[str, Any]) -> None:
        try:
            async for event in self.client.events(**events_args):
                if isinstance(event, MessageEvent):
                    await self.queue.put(event)
                else:
                    await self.notices.put(event)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = exc
            raise

    async def next(self, timeout: float = 10) -> MessageEvent[Any]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    async def notice(self, timeout: float = 10) -> Any:
        """The next event that is not a message."""
        async with asyncio.timeout(timeout):
            return await self.notices.get()

    async def event(self, kind: type, timeout: float = 10) -> Any:
        """The next non-message event of a type, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.notices.get()
                if isinstance(event, kind):
                    return event

    async def take(self, count: int, timeout: float = 20) -> list[MessageEvent[Any]]:
        return [await self.next(timeout) for _ in range(count)]

    async def until_text(self, text: str, timeout: float = 20) -> list[MessageEvent[Any]]:
        """Everything up to and including the first event with ``text``."""
        seen = []
        while True:
            event = await self.next(timeout)
            seen.append(event)
            if event.text == text:
                return seen

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
