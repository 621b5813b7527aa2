"""Logged-out sessions across the cluster: every node refuses their tokens as soon as a logout returns.

Access tokens are verified without a database, so ending a session must reach every node that verifies
them. The API node that ends a session puts a revocation into the KV bucket ``<prefix>_revoked`` (see
:mod:`im_server.bus.revocations`); every API node and gateway mirrors the bucket with a
:class:`RevocationMirror`. Then the :class:`Revoker` runs a *revocation barrier*: one request on
``<prefix>.sessions.barrier`` that every live node answers once its mirror holds the revision, so that
when the logout is answered no node accepts the old tokens any more and gateways have closed the
connections that used them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..bus.nats import Bus
from ..bus.revocations import Revocation, RevocationTable, decode_revocation, encode_revocation
from ..bus.routes import NodeTable

__all__ = ["RevocationMirror", "Revoker"]

log = logging.getLogger(__name__)

BARRIER_TIMEOUT = 2.0
"""How long a revocation barrier waits for the last node (a node that does not answer is stopping)."""


class RevocationMirror:
    """Keeps a :class:`RevocationTable` equal to the bucket and answers revocation barriers.

    ``on_revoked`` is called for every revocation as it is applied (gateways close the connections of
    the session there), before the barrier is answered.
    """

    def __init__(self, bus: Bus, node_id: str, *, on_revoked: Callable[[Revocation], None] | None = None) -> None:
        self._bus = bus
        self._node_id = node_id
        self._on_revoked = on_revoked
        self.table = RevocationTable()
        self.revision = 0
        """The newest bucket revision applied to :attr:`table`."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._rewatching: asyncio.Task[None] | None = None

    def is_revoked(self, session_id: str) -> bool:
        """Whether tokens of this session must be refused."""
        return session_id in self.table

    async def start(self) -> None:
        """Load the bucket, follow it, and answer barriers."""
        bucket = self._bus.revoked
        with contextlib.suppress(Exception):
            needed = self._bus.settings.access_token_ttl
            ttl = (await bucket.status()).ttl
            if ttl is not None and 0 < ttl < needed:
                log.warning(
                    "node %s: bucket %s keeps revocations %.0fs, less than the access-token lifetime %ds",
                    self._node_id,
                    self._bus.subjects.revoked_bucket,
                    ttl,
                    needed,
                )
        await self._watch()
        self._subscription = await self._bus.nc.subscribe(self._bus.subjects.revocation_barrier, cb=self._on_barrier)
        # A restarted NATS forgets the consumer behind the watcher: watch again on every reconnect.
        self._bus.listen(on_reconnect=self._on_reconnect)

    async def _watch(self) -> None:
        self._watcher = await self._bus.revoked.watchall()
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._follow(ready), name=f"revocations-{self._node_id}")
        await ready

    def _on_reconnect(self) -> None:
        if self._rewatching is None or self._rewatching.done():
            self._rewatching = asyncio.create_task(self._rewatch(), name=f"revocations-rewatch-{self._node_id}")

    async def _rewatch(self) -> None:
        delay = 0.05
        while True:
            if self._watcher is not None:
                with contextlib.suppress(Exception):
                    await self._watcher.stop()
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            try:
                async with asyncio.timeout(10):
                    await self._watch()
                return
            except Exception as exc:
                log.warning("node %s: revocations not watched again yet (%s)", self._node_id, exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def _follow(self, ready: asyncio.Future[None]) -> None:
        async for entry in self._watcher:
            if entry is None:
                if not ready.done():
                    ready.set_result(None)
                continue
            try:
                self._apply(entry)
            except Exception:
                log.exception("node %s: bad revocation entry %r", self._node_id, entry.key)
        if not ready.done():
            ready.set_result(None)

    def _apply(self, entry: Any) -> None:
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self.table.discard(entry.key)
        else:
            revocation = decode_revocation(entry.key, entry.value)
            self.table.add(revocation)
            if self._on_revoked is not None:
                self._on_revoked(revocation)
        if entry.revision and entry.revision > self.revision:
            self.revision = entry.revision
            if self._waiters:
                waiting = []
                for revision, future in self._waiters:
                    if revision <= self.revision:
                        if not future.done():
                            future.set_result(None)
                    else:
                        waiting.append((revision, future))
                self._waiters = waiting

    async def wait_for(self, revision: int) -> None:
        """Wait until the table includes ``revision`` (bound it with ``asyncio.timeout``)."""
        if self.revision >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        await future

    async def _on_barrier(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            revision = int(msg.data)
        except ValueError:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BARRIER_TIMEOUT):
                await self.wait_for(revision)
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(self._node_id.encode())

    async def stop(self) -> None:
        """Stop answering and following."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        for task in [self._rewatching, self._task, *self._answering]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for _, future in self._waiters:
            if not future.done():
                future.cancel()


class Revoker:
    """Puts revocations into the bucket and waits until every live node refuses them."""

    def __init__(self, bus: Bus, nodes: NodeTable, *, timeout: float = BARRIER_TIMEOUT) -> None:
        self._bus = bus
        self._nodes = nodes
        self._timeout = timeout
        self.incomplete = 0
        """Barriers that some live node did not answer in time."""

    async def revoke(self, revocations: Sequence[Revocation]) -> None:
        """Publish the revocations (all in flight together), then run one barrier over all live nodes."""
        if not revocations:
            return
        revisions = await asyncio.gather(
            *(self._bus.revoked.put(revocation.session_id, encode_revocation(revocation)) for revocation in revocations)
        )
        await self._barrier(max(revisions))

    async def restore(self, revocations: Sequence[Revocation], present: Callable[[str], bool]) -> int:
        """Put back revocations the bucket lost (``present`` says which it still has); returns how many."""
        missing = [revocation for revocation in revocations if not present(revocation.session_id)]
        for revocation in missing:
            await self._bus.revoked.put(revocation.session_id, encode_revocation(revocation))
        return len(missing)

    async def _barrier(self, revision: int) -> None:
        expected = len(self._nodes.live())
        if expected == 0:
            return
        nc = self._bus.nc
        inbox = nc.new_inbox()
        answered: set[bytes] = set()
        done = asyncio.get_running_loop().create_future()

        async def on_answer(msg: Msg) -> None:
            answered.add(msg.data)
            if len(answered) >= expected and not done.done():
                done.set_result(None)

        subscription = await nc.subscribe(inbox, cb=on_answer)
        try:
            await nc.publish(self._bus.subjects.revocation_barrier, str(revision).encode(), reply=inbox)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await done
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if len(answered) < expected:
            self.incomplete += 1
            log.warning("revocation barrier %d: %d of %d nodes answered", revision, len(answered), expected)
