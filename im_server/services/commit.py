"""Group commit: every send queued while a transaction runs is written by the next one.

There is no timer. While one batch is being committed, new sends pile up in the queue; the next
transaction takes them all (up to ``max_batch``). Light load gets one-message transactions and the
lowest latency; heavy load gets large batches and the highest throughput. A sender is answered only
after its batch committed and its pushes were handed to the bus, so an ack implies the publish (a node
killed after acking has published too).

Committing and publishing overlap: a committed batch goes to a publisher task of its own, which hands its
pushes to ``on_commit`` in commit order and only then answers the batch's senders, while the next batch is
written. Batches that committed while a publish ran are published together, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

from im_schema.errors import ErrorCode

from ..cluster.metrics import SIZE_BUCKETS, Registry
from ..errors import NotFound, Refusal, Unavailable, storage_error
from ..storage import MessageStore, NewMessage, Written
from ..storage._util import now_ms
from ..storage.faults import classify

__all__ = ["Committed", "GroupCommitter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Committed:
    """A newly stored message and the device that sent it."""

    written: Written
    device_id: str | None


@dataclass(slots=True)
class _Pending:
    item: NewMessage
    device_id: str | None
    future: asyncio.Future[Written]
    enqueued: float


SLOW_COMMIT = 0.1
"""Seconds after which a commit is logged as slow."""

RECENT_SENDS = 50_000
"""How many recently committed sends a node remembers to answer retries without the database."""

OnCommit = Callable[[Sequence[Committed]], Awaitable[None]]


class GroupCommitter:
    """Queues sends and writes them in batches through :meth:`MessageStore.write_batch`."""

    def __init__(
        self,
        store: MessageStore,
        *,
        max_batch: int = 1024,
        max_queue_wait: float | None = None,
        on_commit: OnCommit | None = None,
        retries: int = 3,
        metrics: Registry | None = None,
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_queue_wait = max_queue_wait
        self._on_commit = on_commit
        self._retries = retries
        self._queue: list[_Pending] = []
        self._recent: OrderedDict[tuple[int, str], Written] = OrderedDict()
        self._inflight: dict[tuple[int, str], asyncio.Future[Written]] = {}
        """Sends queued or committing, by (sender, client_msg_id): a retry meanwhile waits for them."""
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._published: list[tuple[list[Committed], list[_Pending], list[Written | Refusal | None]]] = []
        """Committed batches waiting for ``on_commit``: their pushes, their senders and the results."""
        self._publisher: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.messages = 0
        metrics = metrics or Registry()
        self._commit_seconds = metrics.histogram("im_commit_seconds", "Duration of one group-commit transaction.")
        self._wait_seconds = metrics.histogram(
            "im_commit_wait_seconds", "Time a send waits in the queue before its transaction starts."
        )
        self._batch_size = metrics.histogram("im_commit_batch_size", "Sends per group commit.", SIZE_BUCKETS)
        self._committed = metrics.counter("im_messages_committed_total", "New messages stored.")
        self._refused = metrics.counter(
            "im_commit_refused_total", "New sends refused because the queue was too old (an overloaded node)."
        )

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="group-commit")

    def enqueue(self, item: NewMessage, device_id: str | None = None) -> asyncio.Future[Written]:
        """Queue one message now; the future resolves once it is committed.

        Messages enqueued one after another get seqs in that order (within their conversation). A send
        this node committed recently is answered from memory; older repeats are found by the database.
        """
        if self._closing:
            raise Unavailable("the server is shutting down", retry_after=1.0)
        future: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        if item.client_msg_id is not None:
            key = (item.sender, item.client_msg_id)
            original = self._inflight.get(key)
            if original is not None:
                # A retry of a send still queued, committing or publishing here (a gateway that timed out
                # on a slow answer): it is answered with the original, after its publish, instead of being
                # stored, found a duplicate and pushed once more, which under overload multiplies the load.
                original.add_done_callback(functools.partial(_follow, future))
                return future
            known = self._recent.get(key)
            if known is not None:
                future.set_result(known.again())
                return future
        if self._max_queue_wait is not None and self._queue:
            waited = time.perf_counter() - self._queue[0].enqueued
            if waited > self._max_queue_wait:
                # Overloaded: refuse now, rather than let every send wait longer and longer (and the
                # senders time out and retry). The queue is the writer's backlog; it empties at each commit.
                self._refused.inc()
                raise Unavailable("the server is busy; retry later", retry_after=round(min(2.0, max(0.1, waited)), 3))
        if item.client_msg_id is not None:
            self._inflight[key] = future
            future.add_done_callback(functools.partial(self._forget, key))
        self._queue.append(_Pending(item, device_id, future, time.perf_counter()))
        self._wakeup.set()
        return future

    def _forget(self, key: tuple[int, str], future: asyncio.Future[Written]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        items = [pending.item for pending in batch]
        results: list[Written | Refusal | None] | None = None
        started = time.perf_counter()
        for pending in batch:
            self._wait_seconds.observe(started - pending.enqueued)
        self._batch_size.observe(len(batch))
        kind = "busy"
        for attempt in range(self._retries + 1):
            try:
                results = await self._store.write_batch(items, now=now_ms())
                break
            except DBAPIError as exc:
                # A lock timeout, a deadlock, or a concurrent node storing the same client_msg_id:
                # the whole transaction rolled back, so trying again is safe and finds any duplicate.
                fault = classify(exc, self._store.db.health.database_path)
                kind = fault.kind if fault is not None else "busy"
                log.warning(
                    "group commit of %d failed (attempt %d, storage %s): %s", len(batch), attempt + 1, kind, exc
                )
                await asyncio.sleep(0.01 * 2**attempt)
            except Exception as exc:
                fault = classify(exc, self._store.db.health.database_path)
                if fault is None:
                    log.exception("group commit of %d failed", len(batch))
                error: BaseException = exc if fault is None else storage_error(fault.kind)
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                return
        if results is None:
            # Nothing of the batch is stored (each attempt rolled back): the senders are told why.
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(storage_error(kind))
            return
        self.batches += 1
        elapsed = time.perf_counter() - started
        self._commit_seconds.observe(elapsed)
        if elapsed > SLOW_COMMIT:
            log.warning("slow group commit: %d messages in %.0f ms", len(batch), elapsed * 1000)
        committed: list[Committed] = []
        pushed: list[Committed] = []
        keys: set[tuple[str, int]] = set()
        for written, pending in zip(results, batch, strict=True):
            if not isinstance(written, Written) or (written.conversation, written.seq) in keys:
                continue  # refused, or a key repeated inside this batch (stored and pushed once)
            keys.add((written.conversation, written.seq))
            if not written.duplicate:
                committed.append(Committed(written, pending.device_id))
            if written.client_msg_id is not None:
                self._recent[(written.sender, written.client_msg_id)] = written
            # A repeat found in the database was stored by an earlier attempt: maybe on a node that died
            # between its commit and its publish, which is why the sender tried again. Push it once more
            # (devices drop a seq they have); otherwise nobody would, until an unrelated sync.
            pushed.append(Committed(written, pending.device_id))
        while len(self._recent) > RECENT_SENDS:
            self._recent.popitem(last=False)
        self.messages += len(committed)
        self._committed.inc(len(committed))
        self._published.append((pushed, batch, results))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish(), name="group-commit-publish")

    async def _publish(self) -> None:
        # One at a time and in commit order, so that pushes of a conversation go out in seq order; a batch's
        # senders are answered only once its pushes are in the bus connection's buffer, ahead of the ack.
        while self._published:
            ready, self._published = self._published, []
            pushed = [committed for entry in ready for committed in entry[0]]
            if pushed and self._on_commit is not None:
                try:
                    await self._on_commit(pushed)
                except Exception:
                    # Stored messages are never lost because a push failed: devices catch up by sync.
                    log.exception("delivery of %d committed messages failed", len(pushed))
            for _, batch, results in ready:
                _answer(batch, results)

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._publisher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher


def _answer(batch: list[_Pending], results: list[Written | Refusal | None]) -> None:
    for pending, written in zip(batch, results, strict=True):
        if pending.future.done():  # the sender gave up waiting; the message is stored all the same
            pass
        elif written is None:
            pending.future.set_exception(
                NotFound("the conversation does not exist", code=ErrorCode.CONVERSATION_NOT_FOUND)
            )
        elif isinstance(written, Refusal):
            pending.future.set_exception(written)
        else:
            pending.future.set_result(written)


def _follow(retry: asyncio.Future[Written], original: asyncio.Future[Written]) -> None:
    if retry.done():
        return
    if original.cancelled():
        # The first sender gave up waiting; the message may be stored all the same: the retry is told to
        # try again, and then finds it.
        retry.set_exception(Unavailable("the send is still being stored; try again", retry_after=0.1))
    elif (error := original.exception()) is not None:
        retry.set_exception(error)
    else:
        retry.set_result(original.result().again())
