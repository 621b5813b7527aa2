"""Running an API node: the node plus a uvicorn server in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn

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


class ApiServer:
    """An API node serving HTTP; ``port=0`` in the settings picks a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._socket = socket.create_server((settings.api_host, settings.api_port), reuse_port=False)
        host, port = self._socket.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.node = ApiNode(settings, url=self.url)
        config = uvicorn.Config(
            create_app(self.node),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the node, then accept requests."""
        await self.node.start()
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
        await self.node.stop()
        self._socket.close()
