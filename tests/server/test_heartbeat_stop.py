"""A node's heartbeat stops even when the cancellation that stop() sends is swallowed on the way."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

from im_server.cluster.heartbeat import Heartbeat


class _Nodes:
    async def delete(self, key: str) -> None:
        pass


class _SwallowingHeartbeat(Heartbeat):
    """Beats as a NATS request whose ``wait_for`` ends as the cancel comes: the cancel is lost."""

    beats = 0

    async def beat(self) -> None:
        self.beats += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)


async def test_stop_ends_the_loop_when_its_cancellation_is_swallowed() -> None:
    bus: Any = SimpleNamespace(settings=SimpleNamespace(heartbeat_interval=0.01), nodes=_Nodes())
    heartbeat = _SwallowingHeartbeat(bus, "gw-test", role="gateway", url=None)
    await heartbeat.start()
    async with asyncio.timeout(5):
        while heartbeat.beats < 3:
            await asyncio.sleep(0.01)
    stopping = asyncio.create_task(heartbeat.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() did not end: the loop went on beating"  # before the fix: forever
