"""A separate listener for ``/metrics`` (``IM_METRICS_HOST:IM_METRICS_PORT``, loopback by default).

Metrics tell an outsider a lot (load, connection counts, error rates), so the public ports serve them
only with ``IM_METRICS_TOKEN``; this listener serves them without one, to whoever can reach it (a
Prometheus on the same host or network). Plain HTTP/1.1, one request per connection, heads bounded by
``IM_MAX_HEADER_BYTES`` and ``IM_HEADER_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ..settings import Settings

__all__ = ["MetricsListener"]

log = logging.getLogger(__name__)


class MetricsListener:
    """Serves ``render()`` at ``GET /metrics``; does nothing if ``IM_METRICS_PORT`` is unset."""

    def __init__(self, render: Callable[[], str], settings: Settings) -> None:
        self._render = render
        self._settings = settings
        self._server: asyncio.Server | None = None
        self.port: int | None = None
        """The port it listens on, once started (``IM_METRICS_PORT=0`` picks a free one)."""

    async def start(self) -> None:
        """Listen, if a port is configured."""
        if self._settings.metrics_port is None:
            return
        self._server = await asyncio.start_server(
            self._serve,
            self._settings.metrics_host,
            self._settings.metrics_port,
            limit=self._settings.max_header_bytes,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self._settings.metrics_host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._settings.header_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method in (b"GET", b"HEAD") and path == b"/metrics":
                body = self._render().encode()
                status, content_type = b"200 OK", b"text/plain; version=0.0.4"
            else:
                body, status, content_type = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                + (body if method != b"HEAD" else b"")
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
