"""Streaming messages: open, write, finish, and close the ones left idle.

The database holds each stream (see :mod:`im_server.storage.streams`): any API node takes any write, and a
node that restarts loses nothing but a pending push. Opening goes through the group commit like a send
(persisted before the answer, same ``client_msg_id`` dedup); so does finishing (one transaction, then the
answer). Writes are pushed to the members' online devices as :class:`~im_schema.events.StreamNotice`
notices carrying the whole text so far, coalesced to one per ``stream_push_interval`` per stream on this
node; the closing notice goes at once. Each node sweeps for streams idle past ``stream_idle_timeout`` (or
open past ``stream_max_duration``) and abandons them, so none stays open forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence

from im_schema.content import TextContent
from im_schema.errors import ErrorCode
from im_schema.events import StreamNotice
from im_schema.streams import StreamProgress, StreamState

from ..errors import RateLimited
from ..settings import Settings
from ..storage import Written
from ..storage._util import now_ms
from ..storage.streams import StreamStore, StreamWrite
from .commit import GroupCommitter
from .delivery import Deliverer
from .messaging import MessagingService
from .ratelimit import RateLimiter

__all__ = ["StreamService"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class _Pending:
    """This node's push state of one stream."""

    last: float = -1e9
    """When the last notice went (loop time)."""
    written: Written | None = None
    notice: StreamNotice | None = None
    skip: tuple[int, str] | None = None
    timer: asyncio.TimerHandle | None = None


class StreamService:
    """Opens streams, takes writes into them, pushes their growth, and closes idle ones."""

    def __init__(
        self,
        settings: Settings,
        store: StreamStore,
        messaging: MessagingService,
        committer: GroupCommitter,
        deliverer: Deliverer,
    ) -> None:
        self._settings = settings
        self._store = store
        self._messaging = messaging
        self._committer = committer
        self._deliverer = deliverer
        self._writes: RateLimiter[int] = RateLimiter(settings.stream_write_rate, settings.stream_write_burst)
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.pushes = 0
        """Stream notices published by this node (each to every online member's devices)."""

    # Lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start sweeping for streams left open."""
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="stream-sweep")

    async def stop(self) -> None:
        """Stop sweeping; pending pushes are dropped (the next write, the finish or the sweep tells)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1)

    # Operations ----------------------------------------------------------------------------------

    async def open(
        self,
        sender: int,
        device_id: str | None,
        *,
        to: int | str | None,
        conversation: str | None,
        client_msg_id: str,
        text: str,
        reply_to: int | None = None,
        mentions: Sequence[int] = (),
        mention_all: bool = False,
    ) -> Written:
        """Store a streaming message and return it once committed (a repeated ``client_msg_id`` returns the
        stored one, open or not)."""
        if await self._store.open_count(sender) >= self._settings.stream_max_open:
            stored = await self._store.find(sender, client_msg_id)
            if stored is not None:
                return stored  # a repeated open (a restarted bot, say) is not a new stream
            raise RateLimited(
                f"at most {self._settings.stream_max_open} streams may be open at once; finish one first",
                code=ErrorCode.QUOTA_EXCEEDED,
                retry_after=1.0,
            )
        item = await self._messaging.prepare(
            sender,
            to=to,
            conversation=conversation,
            client_msg_id=client_msg_id,
            content=TextContent(text=text),
            reply_to=reply_to,
            mentions=mentions,
            mention_all=mention_all,
        )
        written = await self._committer.enqueue(dataclasses.replace(item, stream=True), device_id)
        if written.duplicate:  # answered from the commit's memory or the first copy: read what it is now
            return await self._store.current(written.conversation, written.seq)
        return written

    async def append(
        self, actor: int, device_id: str | None, conversation: str, seq: int, offset: int, text: str
    ) -> StreamProgress:
        """Write ``text`` at ``offset`` of the actor's open stream."""
        self._limit(actor)
        outcome = await self._write(actor, conversation, seq, offset=offset, text=text, close=None)
        if outcome.changed:
            await self._update(outcome, device_id)
        return StreamProgress(conversation=conversation, seq=seq, length=len(outcome.text), state="open")

    async def finish(
        self,
        actor: int,
        device_id: str | None,
        conversation: str,
        seq: int,
        *,
        offset: int | None = None,
        text: str | None = None,
        abandon: bool = False,
    ) -> Written:
        """Close the actor's stream (after writing a last piece, if given); returns the final message."""
        self._limit(actor)
        close: StreamState = "abandoned" if abandon else "finished"
        outcome = await self._write(actor, conversation, seq, offset=offset, text=text, close=close)
        if outcome.changed:
            await self._closed(outcome, device_id)
        return outcome.written

    async def sweep(self) -> int:
        """Abandon the streams left idle or open too long; returns how many this node closed."""
        now = now_ms()
        closed = await self._store.expire(
            idle_before=now - int(self._settings.stream_idle_timeout * 1000),
            opened_before=now - int(self._settings.stream_max_duration * 1000),
        )
        for outcome in closed:
            await self._closed(outcome, None)
        if closed:
            log.info("abandoned %d idle streams", len(closed))
        return len(closed)

    # Internals -----------------------------------------------------------------------------------

    def _limit(self, actor: int) -> None:
        wait = self._writes.acquire(actor)
        if wait:
            raise RateLimited("too many stream writes; send bigger pieces less often", retry_after=round(wait, 3))

    async def _write(
        self,
        actor: int,
        conversation: str,
        seq: int,
        *,
        offset: int | None,
        text: str | None,
        close: StreamState | None,
    ) -> StreamWrite:
        # A rule broken (not the sender, closed, past the limit...) raises a Refusal, told to the client as is.
        return await self._store.write(
            conversation,
            seq,
            actor,
            offset=offset,
            text=text,
            max_len=self._settings.max_text_len,
            close=close,
            now=now_ms(),
        )

    @staticmethod
    def _notice(outcome: StreamWrite) -> StreamNotice:
        written = outcome.written
        return StreamNotice(
            conversation=written.conversation,
            seq=written.seq,
            sender=written.sender,
            text=outcome.text,
            state=outcome.state,
        )

    async def _update(self, outcome: StreamWrite, device_id: str | None) -> None:
        """Push the growth now, or remember it for the push due at the end of the interval."""
        key = (outcome.written.conversation, outcome.written.seq)
        pending = self._pending.setdefault(key, _Pending())
        pending.written = outcome.written
        pending.notice = self._notice(outcome)
        pending.skip = (outcome.written.sender, device_id) if device_id is not None else None
        if pending.timer is not None:
            return  # a push is due; it will carry this text
        loop = asyncio.get_running_loop()
        wait = pending.last + self._settings.stream_push_interval - loop.time()
        if wait <= 0:
            await self._push(key)
        else:
            pending.timer = loop.call_later(wait, self._due, key)

    def _due(self, key: tuple[str, int]) -> None:
        task = asyncio.create_task(self._push(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, key: tuple[str, int]) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.notice is None or pending.written is None:
            return
        pending.timer = None
        pending.last = asyncio.get_running_loop().time()
        notice, written, skip = pending.notice, pending.written, pending.skip
        pending.notice = None
        try:
            await self._deliverer.notice(await self._deliverer.recipients(written), notice, skip=skip)
            self.pushes += 1
        except Exception as exc:  # a lost push heals at the next one, the finish, or the device's sync
            log.warning("stream push for %s/%d not sent: %s", key[0], key[1], exc)

    async def _closed(self, outcome: StreamWrite, device_id: str | None) -> None:
        """Tell everyone at once that a stream closed, with its final text."""
        key = (outcome.written.conversation, outcome.written.seq)
        pending = self._pending.pop(key, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        skip = (outcome.written.sender, device_id) if device_id is not None else None
        try:
            recipients = await self._deliverer.recipients(outcome.written)
            await self._deliverer.notice(recipients, self._notice(outcome), skip=skip)
            self.pushes += 1
        except Exception as exc:  # stored all the same: devices read the final text from history
            log.warning("closing push for %s/%d not sent: %s", key[0], key[1], exc)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.stream_sweep_interval)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("stream sweep failed: %s", exc)
            self._forget_idle()

    def _forget_idle(self) -> None:
        """Drop push state of streams this node has not pushed for a while (closed elsewhere, say)."""
        horizon = asyncio.get_running_loop().time() - self._settings.stream_idle_timeout
        for key, pending in list(self._pending.items()):
            if pending.timer is None and pending.last < horizon:
                del self._pending[key]
