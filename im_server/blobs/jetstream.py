"""Blobs in a NATS JetStream object store (the default: NATS runs anyway).

The layout is the object store's own (stream ``OBJ_<bucket>``, chunks on ``$O.<bucket>.C.<nuid>``, the
object's description on ``$O.<bucket>.M.<name>``), so ``nats object ls|get`` work on it. Two additions:

- **Pipelined writes.** Chunks are published with up to :data:`WINDOW` acknowledgements outstanding
  instead of one round trip (and, with ``sync_interval: always``, one fsync) at a time. The description
  goes last, only after every chunk was acknowledged, so a reader never sees a partial blob; it carries
  ``Nats-Expected-Last-Subject-Sequence`` so that of two nodes storing the same blob at once one wins
  and the other removes its chunks.
- **Ranged reads.** The description's headers carry the stream sequence of every chunk (as runs,
  ``Im-Chunk-Seqs: 12-40,57-90``), so a read from the middle of a large video fetches just the chunks it
  needs, by direct get, a few in flight at a time. Objects written by other tools (without the header)
  are read chunk by chunk from the start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from .base import BlobNotFound, BlobStore, BlobStoreError

__all__ = ["READ_AHEAD", "WINDOW", "JetStreamBlobStore", "parse_runs", "runs"]

log = logging.getLogger(__name__)

WINDOW = 32
"""Chunk publishes awaiting their acknowledgement at once."""
READ_AHEAD = 8
"""Chunk fetches in flight at once while reading."""
_READ_BLOCK = 1024 * 1024
_SEQS_HEADER = "Im-Chunk-Seqs"
_WRONG_LAST_SEQUENCE = 10071


def runs(seqs: list[int]) -> str:
    """``[3, 4, 5, 9, 10]`` as ``"3-5,9-10"``."""
    parts: list[str] = []
    start = previous = None
    for seq in seqs:
        if previous is not None and seq == previous + 1:
            previous = seq
            continue
        if start is not None:
            parts.append(f"{start}-{previous}")
        start = previous = seq
    if start is not None:
        parts.append(f"{start}-{previous}")
    return ",".join(parts)


def parse_runs(text: str) -> list[int]:
    """The inverse of :func:`runs`."""
    seqs: list[int] = []
    for part in text.split(","):
        if part:
            first, _, last = part.partition("-")
            seqs.extend(range(int(first), int(last or first) + 1))
    return seqs


def _meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def _chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


class JetStreamBlobStore(BlobStore):
    """Blobs in the JetStream object store ``bucket``."""

    kind = "nats"

    def __init__(self, js: JetStreamContext, bucket: str, *, replicas: int = 1, chunk_size: int = 128 * 1024) -> None:
        self._js = js
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"
        self._replicas = replicas
        self._chunk_size = chunk_size
        self._direct = True

    async def start(self) -> None:
        """Create the bucket unless it exists (an operator may have made it with more replicas)."""
        try:
            await self._js.object_store(self.bucket)
            return
        except nats.js.errors.BucketNotFoundError:
            pass
        config = api.ObjectStoreConfig(
            description="Files of the IM cluster, by SHA-256",
            replicas=self._replicas,
            storage=api.StorageType.FILE,
        )
        try:
            await self._js.create_object_store(self.bucket, config=config)
        except nats.js.errors.BadRequestError:
            await self._js.object_store(self.bucket)  # another node created it first

    # Reading descriptions ---------------------------------------------------------------------------

    async def _info(self, blob: str) -> tuple[api.ObjectInfo | None, int]:
        """The object's description (``None`` if absent or deleted) and its stream sequence (0 if none)."""
        try:
            raw = await self._js.get_last_msg(self.stream, _meta_subject(self.bucket, blob))
        except nats.js.errors.NotFoundError:
            return None, 0
        except (TimeoutError, nats.errors.Error) as exc:
            raise BlobStoreError(f"object store {self.bucket}: {exc!r}") from exc
        info = api.ObjectInfo.from_response(json.loads(raw.data or b"{}"))
        return (None if info.deleted else info), raw.seq or 0

    async def size(self, blob: str) -> int | None:
        """The blob's size, or ``None``."""
        info, _ = await self._info(blob)
        return None if info is None else (info.size or 0)

    # Writing ----------------------------------------------------------------------------------------

    async def put(self, blob: str, path: Path, *, size: int, media_type: str) -> bool:
        """Publish the file's chunks, then its description; see the module docstring."""
        info, meta_seq = await self._info(blob)
        if info is not None:
            return False
        nuid = secrets.token_hex(11)
        subject = _chunk_subject(self.bucket, nuid)
        try:
            seqs = await self._publish_chunks(subject, path)
            meta = api.ObjectInfo(
                name=blob,
                bucket=self.bucket,
                nuid=nuid,
                size=size,
                chunks=len(seqs),
                mtime=datetime.now(UTC).isoformat(),
                digest="SHA-256=" + base64.urlsafe_b64encode(binascii.unhexlify(blob)).decode(),
                headers={"Content-Type": [media_type], _SEQS_HEADER: [runs(seqs)]},
                options=api.ObjectMetaOptions(max_chunk_size=self._chunk_size),
            )
            headers = {
                api.Header.ROLLUP.value: "sub",
                api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(meta_seq),
            }
            try:
                await self._js.publish(
                    _meta_subject(self.bucket, blob), json.dumps(meta.as_dict()).encode(), headers=headers
                )
            except nats.js.errors.APIError as exc:
                if exc.err_code != _WRONG_LAST_SEQUENCE:
                    raise
                # Another node stored the same bytes meanwhile: keep theirs, drop ours.
                await self._purge(subject)
                return False
        except BaseException as exc:
            await asyncio.shield(self._purge(subject))
            if isinstance(exc, (nats.errors.Error, asyncio.TimeoutError)):
                raise BlobStoreError(f"object store {self.bucket}: {exc!r}") from exc
            raise
        return True

    async def _publish_chunks(self, subject: str, path: Path) -> list[int]:
        loop = asyncio.get_running_loop()
        pending: deque[asyncio.Future[api.PubAck]] = deque()
        seqs: list[int] = []
        try:
            with path.open("rb") as file:
                while True:
                    block = await loop.run_in_executor(None, file.read, _READ_BLOCK)
                    if not block:
                        break
                    view = memoryview(block)
                    for start in range(0, len(view), self._chunk_size):
                        chunk = bytes(view[start : start + self._chunk_size])
                        pending.append(await self._js.publish_async(subject, chunk))
                        while len(pending) >= WINDOW:
                            seqs.append((await pending.popleft()).seq)
            while pending:
                seqs.append((await pending.popleft()).seq)
        except BaseException:
            # Chunks already sent may still be stored after this: let them land before the caller purges.
            if pending:
                await asyncio.wait(pending, timeout=5)
            raise
        return seqs

    async def _purge(self, subject: str) -> None:
        try:
            await self._js.purge_stream(self.stream, subject=subject)
        except Exception as exc:
            log.warning("cannot remove the chunks on %s: %r", subject, exc)

    async def delete(self, blob: str) -> bool:
        """Mark the blob deleted and remove its chunks."""
        info, _ = await self._info(blob)
        if info is None:
            return False
        info.deleted = True
        info.size = info.chunks = 0
        info.digest = ""
        await self._js.publish(
            _meta_subject(self.bucket, blob),
            json.dumps(info.as_dict()).encode(),
            headers={api.Header.ROLLUP.value: "sub"},
        )
        await self._purge(_chunk_subject(self.bucket, info.nuid))
        return True

    # Reading bytes -----------------------------------------------------------------------------------

    async def read(self, blob: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``[offset, offset + length)``; see the module docstring."""
        info, _ = await self._info(blob)
        if info is None:
            raise BlobNotFound(blob)
        total = info.size or 0
        end = total if length is None else min(total, offset + length)
        if offset >= end:
            return _empty()
        chunk_size = (info.options.max_chunk_size if info.options else None) or self._chunk_size
        headers: dict[str, Any] = info.headers or {}
        listed = headers.get(_SEQS_HEADER)
        subject = _chunk_subject(self.bucket, info.nuid)
        if listed:
            seqs = parse_runs(listed[0] if isinstance(listed, list) else str(listed))
            if len(seqs) != info.chunks:
                raise BlobStoreError(f"blob {blob}: its chunk list does not match its chunk count")
            return self._read_indexed(subject, seqs, chunk_size, offset, end)
        return self._read_scanning(subject, chunk_size, offset, end)

    async def _fetch(self, seq: int) -> api.RawStreamMsg:
        if self._direct:
            try:
                return await self._js.get_msg(self.stream, seq=seq, direct=True)
            except nats.errors.NoRespondersError:
                self._direct = False  # a bucket made without direct gets
            except nats.js.errors.NotFoundError:
                pass  # a replica that lags behind answered: ask the leader
        return await self._js.get_msg(self.stream, seq=seq)

    async def _read_indexed(
        self, subject: str, seqs: list[int], chunk_size: int, offset: int, end: int
    ) -> AsyncIterator[bytes]:
        first, last = offset // chunk_size, (end - 1) // chunk_size
        position = first * chunk_size
        fetches: deque[asyncio.Task[api.RawStreamMsg]] = deque()
        index = first
        try:
            while index <= last or fetches:
                while index <= last and len(fetches) < READ_AHEAD:
                    fetches.append(asyncio.ensure_future(self._fetch(seqs[index])))
                    index += 1
                try:
                    message = await fetches.popleft()
                except (TimeoutError, nats.errors.Error) as exc:
                    raise BlobStoreError(f"object store {self.bucket}: {exc!r}") from exc
                data = message.data or b""
                if message.subject != subject:
                    raise BlobStoreError(f"chunk {message.seq} is not part of {subject}")
                yield data[max(0, offset - position) : end - position]
                position += len(data)
        finally:
            for task in fetches:
                task.cancel()
            for task in fetches:
                with contextlib.suppress(BaseException):
                    await task

    async def _read_scanning(self, subject: str, chunk_size: int, offset: int, end: int) -> AsyncIterator[bytes]:
        position = 0
        cursor = 1
        while position < end:
            try:
                message = await self._js.get_msg(self.stream, seq=cursor, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                raise BlobStoreError(f"{subject} ends before its size") from None
            except (TimeoutError, nats.errors.Error) as exc:
                raise BlobStoreError(f"object store {self.bucket}: {exc!r}") from exc
            data = message.data or b""
            cursor = (message.seq or cursor) + 1
            if position + len(data) > offset:
                yield data[max(0, offset - position) : end - position]
            position += len(data)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""
