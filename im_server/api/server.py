"""Running an API node: the node plus a uvicorn server in the same event loop.

The HTTP server reads at most ``IM_MAX_HEADER_BYTES`` of request head and gives a client
``IM_HEADER_TIMEOUT`` seconds to send it (from the connection's start or the previous response), so that
slow or endless headers cannot hold connections open. ``X-Forwarded-For`` is left to the node's
entrance (``IM_TRUSTED_PROXIES``), never taken by uvicorn itself. ``IM_METRICS_PORT`` adds a listener
for ``/metrics`` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..cluster.exposition import MetricsListener
from ..settings import Settings
from .app import create_app
from .node import ApiNode

__all__ = ["ApiServer"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process runner owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


_TOO_LARGE_BODY = b'{"error":{"code":"payload_too_large","message":"the request head is larger than allowed"}}\n'
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n\r\n" + _TOO_LARGE_BODY
)


class _HeadDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for each request head.

    uvicorn has no deadline (a client trickling header bytes would keep its connection forever), and
    httptools has no limit at all: it gathers a header line however long it grows. Every byte read
    while a head is incomplete counts towards ``head_limit``; a read larger than what is left is parsed
    up to the limit first, and refused with ``431`` unless the head ended within it (a body or the next
    request may follow in the same read). A head that begins in the middle of a read (pipelined behind a
    request) is counted from the next read on, so it may exceed the limit by at most one read.
    """

    head_timeout: float = 10.0
    head_limit: int = 16 * 1024
    _deadline: asyncio.TimerHandle | None = None
    _in_head: bool = True
    """Whether the bytes read now belong to a request head (from the connection's start or a message's)."""
    _head_bytes: int = 0

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        # Armed when a head is awaited, disarmed when one is complete: the client was too slow.
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        room = self.head_limit - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        super().data_received(data[:room])
        if self._in_head:
            if not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()
            return
        if self.parser is not None and not self.transport.is_closing() and not self.parser.should_upgrade():
            self.data_received(data[room:])

    def on_message_begin(self) -> None:
        if not self._in_head:
            self._in_head = True
            self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._arm()  # the next request's head, if the client keeps the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


_STOPPING_BODY = b'{"error":{"code":"unavailable","message":"the node is stopping; send the request again"}}\n'


class _CutOffAnswer503:
    """ASGI wrapper: a request that the graceful shutdown's deadline cuts off answers ``503 unavailable``.

    uvicorn answers such a request ``500``, which clients take as final; ``503`` with ``Retry-After`` tells
    them (and a load balancer) to send it again, to another node. Sends are idempotent by
    ``client_msg_id``, so the retry cannot store a message twice.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not started:
                headers = [
                    (b"content-type", b"application/json"),
                    (b"retry-after", b"1"),
                    (b"connection", b"close"),
                    (b"content-length", str(len(_STOPPING_BODY)).encode()),
                ]
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.start", "status": 503, "headers": headers})
                    await send({"type": "http.response.body", "body": _STOPPING_BODY})
            raise


class ApiServer:
    """An API node serving HTTP; ``port=0`` in the settings picks a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # With api_reuse_port, the other API processes of this machine bind the same port (same user only:
        # the kernel refuses SO_REUSEPORT across users) and the kernel spreads connections over them.
        self._socket = socket.create_server((settings.api_host, settings.api_port), reuse_port=settings.api_reuse_port)
        host, port = self._socket.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.node = ApiNode(settings, url=self.url)
        protocol = type(
            "HeadDeadline",
            (_HeadDeadline,),
            {"head_timeout": settings.header_timeout, "head_limit": settings.max_header_bytes},
        )
        config = uvicorn.Config(
            _CutOffAnswer503(create_app(self.node)),
            http=protocol,
            proxy_headers=False,
            log_level="warning",
            log_config=None,  # uvicorn's records go through the process's handler (IM_LOG_FORMAT)
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.metrics_listener = MetricsListener(self.node.metrics.render, settings)

    async def start(self) -> None:
        """Start the node, then accept requests."""
        await self.node.start()
        await self.metrics_listener.start()
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="uvicorn")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the HTTP server did not start")
            await asyncio.sleep(0.01)
        log.info("api %s listening on %s", self.node.node_id, self.url)

    async def stop(self) -> None:
        """Stop accepting requests, finish the open ones, stop the node."""
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.metrics_listener.stop()
        await self.node.stop()
        self._socket.close()
