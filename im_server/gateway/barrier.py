"""Route barrier: wait until every live API node routes to a newly registered device.

A gateway registers a device's route, then asks all API nodes (one request on the barrier subject,
batched over all connections that registered meanwhile) to answer once their local route tables hold
that revision. Only then does it send ``ready``. From that moment every committed message is pushed
to the device, so the one sync the client runs after ``ready`` closes the gap with nothing missed.

A round that not every API node answers in time (an API node between NATS servers, its registry
view catching up) does not hold ``ready`` back; :meth:`RouteBarrier.wait` says so, and the gateway
sends that device a ``resync`` once a later round is answered (see ``GatewayNode._confirm_route``).

Each API node answers with its id and a *mark*, a number it raises with every answer: whatever it
remembered before that mark happened before the answer. A gateway that tells all its clients to resync
after a round passes the marks it was given on (see ``GatewayNode._recover``), so that the API nodes can
drop the resyncs they owed to the same devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg

from ..bus.nats import Bus
from ..bus.routes import NodeTable

__all__ = ["RouteBarrier"]

log = logging.getLogger(__name__)


class RouteBarrier:
    """Batches barrier requests; waits for as many answers as there are live API nodes."""

    def __init__(self, bus: Bus, nodes: NodeTable, *, timeout: float = 2.0) -> None:
        self._bus = bus
        self._nodes = nodes
        self._timeout = timeout
        self._waiters: list[tuple[int, asyncio.Future[tuple[bool, dict[str, int]]]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def start(self) -> None:
        """Start the batching task."""
        self._task = asyncio.create_task(self._run(), name="route-barrier")

    async def wait(self, revision: int) -> bool:
        """Return once every live API node has applied ``revision`` (true) or the timeout passed (false)."""
        complete, _ = await self.marks(revision)
        return complete

    async def marks(self, revision: int) -> tuple[bool, dict[str, int]]:
        """As :meth:`wait`, with the mark of each API node that answered (its id: its mark)."""
        future: asyncio.Future[tuple[bool, dict[str, int]]] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            waiters, self._waiters = self._waiters, []
            if not waiters:
                continue
            complete = False
            marks: dict[str, int] = {}
            try:
                revision = max(revision for revision, _ in waiters)
                complete = await self._round(revision, marks)
            except Exception as exc:
                log.warning("route barrier failed: %s", exc)
            for _, future in waiters:
                if not future.done():
                    future.set_result((complete, dict(marks)))  # answers that come later are not in it

    async def _round(self, revision: int, marks: dict[str, int]) -> bool:
        # With no API node in view, at least one answer is still waited for: this view may be the one
        # behind (the node registry between leaders, say), and an API node that is up but unseen would
        # not route to the device. (An API node that starts later loads the whole registry first.)
        expected = max(len(self._nodes.live("api")), 1)
        self.rounds += 1
        nc = self._bus.nc
        inbox = nc.new_inbox()
        answered = 0
        done = asyncio.get_running_loop().create_future()

        async def on_answer(msg: Msg) -> None:
            nonlocal answered
            answered += 1
            node, _, mark = msg.data.decode(errors="replace").partition(" ")
            if mark.isascii() and mark.isdigit() and len(mark) < 20:
                marks[node] = int(mark)
            if answered >= expected and not done.done():
                done.set_result(None)

        subscription = await nc.subscribe(inbox, cb=on_answer)
        try:
            await nc.publish(self._bus.subjects.barrier, str(revision).encode(), reply=inbox)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await done
        finally:
            await subscription.unsubscribe()
        if answered < expected:
            log.warning("route barrier %d: %d of %d API nodes answered", revision, answered, expected)
            return False
        return True

    async def stop(self) -> None:
        """Stop batching; pending waiters are released."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._waiters:
            if not future.done():
                future.set_result((False, {}))
