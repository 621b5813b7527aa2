"""Group work that many callers ask for at once into one run: one transaction, one barrier round.

A :class:`Batcher` takes items one at a time (:meth:`Batcher.submit`) and hands whatever is waiting to
its ``run`` function in one call, at most ``max_size`` items. While a run is in progress, new items
wait and make up the next run; a lone item runs at once, so an idle server adds no delay. Each caller
gets its own item's outcome: ``run`` returns one result or exception per item, in order, and an
exception raised by ``run`` itself goes to every item of that run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

I = TypeVar("I")  # noqa: E741 (the item type)
R = TypeVar("R")


class Batcher(Generic[I, R]):
    """Runs waiting items together, one run at a time (see the module docstring)."""

    def __init__(
        self, run: Callable[[list[I]], Awaitable[Sequence[R | BaseException]]], *, max_size: int = 256
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._run = run
        self._max_size = max_size
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        """Runs so far (items per run: the number of submits over this)."""

    async def submit(self, item: I) -> R:
        """Run ``item`` with whatever else waits; returns its result or raises its exception."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_size]
                del self._waiting[: self._max_size]
                self.runs += 1
                try:
                    results = await self._run([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"a batch of {len(batch)} items gave {len(results)} results")
                except BaseException as exc:  # every item of the run learns why (cancellation included)
                    for _, future in batch:
                        if future.done():
                            continue
                        if isinstance(exc, Exception):
                            future.set_exception(exc)
                        else:
                            future.cancel()
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its caller went away; the work is done regardless
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._task = None
            for _, future in self._waiting:
                if not future.done():
                    future.set_exception(RuntimeError("the batch runner stopped"))
            self._waiting.clear()
