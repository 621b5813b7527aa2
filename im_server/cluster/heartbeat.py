"""Node heartbeats into the node registry (a KV bucket whose entries expire after ``node_ttl``).

A node beats every ``heartbeat_interval``, and at once when its NATS connection comes back. When a beat
lands more than ``node_ttl`` after the previous one (NATS was away, or the event loop stalled), the
others may have judged the node dead in between (and removed its routes): ``on_gap`` is called so that
the node can put its state back and tell its clients to resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable

import orjson

from ..bus.nats import Bus

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        # The distribution that installed this package, whatever it is named.
        names = importlib.metadata.packages_distributions().get("im_server") or ["im"]
        return importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_VERSION = _version()


class Heartbeat:
    """Puts ``{role, url, connections, started_at, pid, version, state}`` under the node id every
    ``interval`` seconds.

    A gateway also gives ``frames``: the WebSocket frames it received and wrote since it started. The
    beat carries those totals and the rates since the previous beat (``frames_in_rate``,
    ``frames_out_rate``, per second), so that readers of the registry need no history of their own.
    """

    def __init__(
        self,
        bus: Bus,
        node_id: str,
        *,
        role: str,
        url: str | None,
        connections: Callable[[], int] = lambda: 0,
        state: Callable[[], str] = lambda: "serving",
        frames: Callable[[], tuple[float, float]] | None = None,
    ) -> None:
        self._bus = bus
        self.node_id = node_id
        self._role = role
        self._url = url
        self._connections = connections
        self._state = state
        self._frames = frames
        self._last_frames: tuple[float, float, float] | None = None
        """``(monotonic time, frames in, frames out)`` at the previous beat."""
        self._started_at = time.time()
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.last_ok: float | None = None
        """``time.monotonic()`` of the last heartbeat the registry accepted."""
        self.on_gap: Callable[[], None] | None = None
        """Called after a beat that followed a silence longer than the node TTL."""
        self.on_written: Callable[[int], None] | None = None
        """Called with the registry revision of each beat written (see ``RegistryMirror.beat_written``)."""
        self.on_failed: Callable[[], None] | None = None
        """Called after a beat that could not be written."""

    async def beat(self) -> None:
        """Write one heartbeat now."""
        beat: dict[str, object] = {
            "role": self._role,
            "url": self._url,
            "connections": self._connections(),
            "started_at": self._started_at,
            "pid": os.getpid(),
            "version": _VERSION,
            "state": self._state(),
        }
        if self._frames is not None:
            beat.update(self._frame_figures())
        revision = await self._bus.nodes.put(self.node_id, orjson.dumps(beat))
        if self.on_written is not None:
            self.on_written(revision)
        now = time.monotonic()
        previous, self.last_ok = self.last_ok, now
        if previous is not None and now - previous >= self._bus.settings.node_ttl and self.on_gap is not None:
            log.warning(
                "node %s: %.1fs without a heartbeat; others may have judged it dead", self.node_id, now - previous
            )
            self.on_gap()

    def _frame_figures(self) -> dict[str, float]:
        assert self._frames is not None
        now = time.monotonic()
        frames_in, frames_out = self._frames()
        figures = {"frames_in": frames_in, "frames_out": frames_out}
        previous, self._last_frames = self._last_frames, (now, frames_in, frames_out)
        if previous is not None and now > previous[0]:
            elapsed = now - previous[0]
            figures["frames_in_rate"] = round(max(0.0, frames_in - previous[1]) / elapsed, 2)
            figures["frames_out_rate"] = round(max(0.0, frames_out - previous[2]) / elapsed, 2)
        return figures

    def beat_soon(self) -> None:
        """Beat now rather than at the next interval (after a reconnect, say)."""
        self._wakeup.set()

    async def start(self) -> None:
        """Beat once (so the node is known before it serves), then keep beating."""
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self.node_id}")

    async def _run(self) -> None:
        interval = self._bus.settings.heartbeat_interval
        while True:
            with contextlib.suppress(TimeoutError):
                # Not wait_for: on Python 3.11 it may swallow a cancellation that comes as the wait ends,
                # and stop() then waits for this loop forever (seen as a gateway that never stopped).
                async with asyncio.timeout(interval):
                    await self._wakeup.wait()
            if self._stopping:
                # The cancellation may have been swallowed all the same, by a wait_for inside the NATS
                # client while this loop beat: seen once as a gateway that did not stop within 60 s.
                return
            self._wakeup.clear()
            try:
                await self.beat()
            except Exception as exc:
                log.warning("node %s: heartbeat failed: %s", self.node_id, exc)
                if self.on_failed is not None:
                    self.on_failed()

    async def stop(self) -> None:
        """Stop beating and remove the node from the registry."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._bus.nodes.delete(self.node_id)
