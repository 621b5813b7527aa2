"""A small HTTP/1.1 client for the connect workload: keep-alive connections, JSON in and out.

httpx costs a client process 4-9 ms of CPU per request when hundreds of tasks share its pool (measured
on W4: the two client processes, not the servers, bounded the connect rate). This client does one
request at a time per connection over asyncio streams and costs about 0.1 ms; it only speaks what the
API answers (``Content-Length`` or chunked bodies, JSON).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = ["HttpError", "HttpPool"]


class HttpError(Exception):
    """A non-2xx answer, or a connection that broke during a request."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def _body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    return b"".join(parts)
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
        return await self.reader.readexactly(int(headers.get("content-length", "0")))

    async def request(self, head: bytes, data: bytes) -> tuple[int, bytes, bool]:
        self.writer.write(head + data)
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        status = int(line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self._body(headers)
        return status, body, headers.get("connection", "").lower() == "close"


class HttpPool:
    """Up to ``size`` keep-alive connections to one server; a request waits for a free one."""

    def __init__(self, url: str, size: int = 32) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(size)

    async def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """Send one request; returns the decoded JSON answer, or raises :class:`HttpError`."""
        data = b"" if body is None else orjson.dumps(body)
        head = f"{method} {path} HTTP/1.1\r\nhost: {self._host}\r\ncontent-length: {len(data)}\r\n"
        if body is not None:
            head += "content-type: application/json\r\n"
        if token is not None:
            head += f"authorization: Bearer {token}\r\n"
        async with self._slots:
            for attempt in range(2):
                # The retry opens a new connection: the other idle ones may have been closed by the server
                # too (it ends a kept-alive connection that sends no request within its head deadline).
                fresh = attempt > 0 or not self._idle
                connection = _Connection(*await self._open()) if fresh else self._idle.pop()
                try:
                    status, raw, close = await connection.request((head + "\r\n").encode(), data)
                except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                    connection.writer.close()
                    if fresh or attempt:
                        raise
                    continue  # a kept-alive connection the server had closed meanwhile: once more
                if close:
                    connection.writer.close()
                else:
                    self._idle.append(connection)
                answer = orjson.loads(raw) if raw else None
                if not 200 <= status < 300:
                    raise HttpError(status, answer)
                return answer
        raise AssertionError("unreachable")

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self._host, self._port)

    async def close(self) -> None:
        """Close the idle connections."""
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()
