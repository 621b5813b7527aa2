"""Helpers for fault tests: an API node in its own process, a raw device.

A private nats-server to stop and restart is :class:`tests.support.nats.PrivateNats`.

The raw device speaks the WebSocket protocol itself (no SDK), so that a test sees exactly which frames
arrive, answers a ``resync`` frame by fetching what it lacks over HTTP, and can stop reading its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from im_schema.content import TextContent
from im_schema.frames import AuthFrame, SendFrame
from im_sdk import AsyncClient
from im_server.cluster.natsbin import free_port, wait_for_port

__all__ = ["RawDevice", "kill", "spawn_api_process"]


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, and reap."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(10)


def spawn_api_process(env: dict[str, str], node_id: str) -> tuple[subprocess.Popen[bytes], str]:
    """An API node in its own process (``env``: the cluster's settings as ``IM_*``); returns it and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "im_server", "api"],
        env={**os.environ, **env, "IM_NODE_ID": node_id, "IM_API_PORT": str(port), "IM_API_HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, process=process, timeout=60)
    return process, f"http://127.0.0.1:{port}"


def text_frame(to: int | str, text: str, client_msg_id: str | None = None) -> str:
    """A ``send`` frame of a text message."""
    key = client_msg_id or secrets.token_hex(8)
    return SendFrame(to=to, client_msg_id=key, content=TextContent(text=text)).model_dump_json()


class RawDevice:
    """One WebSocket connection of a logged-in client, read in a background task."""

    def __init__(self, client: AsyncClient, connection: ClientConnection) -> None:
        self.client = client
        self.connection = connection
        self.seen: dict[str, set[int]] = {}
        """Seqs received per conversation, by push or by a fetch after ``resync``."""
        self.pushed = 0
        self.duplicates = 0
        self.resyncs = 0
        self.acks: dict[str, list[dict[str, Any]]] = {}
        self.errors: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, client: AsyncClient, url: str | None = None, *, read: bool = True) -> RawDevice:
        """Ask the API for a gateway (unless ``url``), authenticate, wait for ``ready``."""
        token = client._state.access_token
        assert token is not None
        if url is None:
            async with httpx.AsyncClient(base_url=client.server_url) as http:
                answer = await http.get("/v1/gateway", headers={"Authorization": f"Bearer {token}"})
                answer.raise_for_status()
                url = answer.json()["url"]
        connection = await connect(url, max_size=None, compression=None)
        await connection.send(AuthFrame(token=token).model_dump_json())
        ready = orjson.loads(await connection.recv())
        resyncs = 0
        while ready["type"] == "resync":
            # A gateway resyncing every client (after a gap in its heartbeats or bus) may tell this one
            # too before ``ready``: it catches up on ``ready`` anyway.
            resyncs += 1
            ready = orjson.loads(await connection.recv())
        assert ready["type"] == "ready", ready
        device = cls(client, connection)
        device.resyncs = resyncs
        if read:
            device.start_reading()
        return device

    def start_reading(self) -> None:
        self._task = asyncio.create_task(self._read())

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.connection:
                frame = orjson.loads(data)
                kind = frame["type"]
                if kind == "message":
                    self.pushed += 1
                    self._note(frame["message"])
                elif kind == "resync":
                    self.resyncs += 1
                    await self.catch_up()
                elif kind == "ack":
                    self.acks.setdefault(frame["client_msg_id"], []).append(frame["message"])
                elif kind == "error":
                    self.errors.append(frame)
                self.changed.set()
        self.changed.set()

    def _note(self, message: dict[str, Any]) -> None:
        seqs = self.seen.setdefault(message["conversation"], set())
        if message["seq"] in seqs:
            self.duplicates += 1
        seqs.add(message["seq"])

    async def catch_up(self) -> None:
        """What a client does on ``resync``: fetch every conversation past what it has."""
        for summary in await self.client.conversations():
            have = self.seen.get(summary.id, set())
            after = 0  # from the first gap (a lost push below the newest seen), as a client's cursor does
            while after + 1 in have:
                after += 1
            while after < summary.max_seq:
                page = await self.client.history(summary.id, after=after, limit=500)
                if not page.messages:
                    break
                for message in page.messages:
                    if message.seq not in have:
                        self._note(message.model_dump(mode="json"))
                after = page.messages[-1].seq

    async def until(self, predicate: Any, timeout: float = 20) -> None:
        """Wait until ``predicate(self)`` holds."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.changed.clear()
                if predicate(self):
                    return
                await self.changed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.connection.close()


async def connect_device(client: AsyncClient, attempts: int = 20) -> RawDevice:
    """:meth:`RawDevice.connect`, again while the API answers 503 (on a loaded machine a gateway's
    heartbeat may lapse for a moment, and then no gateway is assigned)."""
    for attempt in range(attempts):
        try:
            return await RawDevice.connect(client)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 503 or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")
