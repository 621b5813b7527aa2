"""Uploads and downloads: the rules every blob passes on its way in and out.

An upload is spooled to a temporary file while it is hashed and counted (never held in memory), then
read for what it is (type from the bytes, image size and thumbnail, audio/video duration), then put
into the blob store, and only then recorded and acknowledged. If anything fails, or the client goes
away mid-body, the temporary files are removed and nothing reaches the store or the database.

Limits, so that no user and no file can take the node down (see docs/operations.md, "Files"):

- per user, at most ``max_concurrent_uploads`` uploads at once (per API node) and ``upload_quota_bytes``
  received per UTC day (cluster-wide, in the database; refused uploads count too), checked before an
  upload is read and again as its bytes arrive: ``quota_exceeded`` (429, with ``retry_after``);
- per picture, ``max_image_pixels`` and ``image_decode_memory``, both checked from the header before
  any decoding; per node, ``max_concurrent_decodes`` pictures decoded or audio/video files read at once
  (the others wait), so that neither memory nor the worker threads run out;
- the readers in :mod:`im_server.media` read a bounded number of bytes whatever the file claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, get_args

from starlette.requests import ClientDisconnect

from im_schema.content import MediaKind
from im_schema.errors import ErrorCode
from im_schema.files import FileLimits, Upload

from ..blobs import BlobNotFound, BlobStore, BlobStoreError
from ..errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
)
from ..media import AUDIO_TYPES, IMAGE_TYPES, VIDEO_TYPES, AvInfo, MediaError, extension_for, probe_av, probe_image
from ..media.sniff import SNIFF_BYTES, sniff
from ..settings import Settings
from ..storage._util import now_ms
from ..storage.files import BlobRecord, FileStore, Usable

__all__ = ["KINDS", "FileService", "UploadQuota", "clean_name", "default_name", "media_error"]

log = logging.getLogger(__name__)

KINDS: tuple[MediaKind, ...] = get_args(MediaKind)
_FLUSH = 1024 * 1024
"""Bytes gathered in memory before they are hashed and written to the spool file in a worker thread."""
_STALE_SPOOL = 24 * 3600
"""Spool files older than this (left by a crashed process) are removed when a node starts."""
_DAY_MS = 86_400_000
_AV_CONTAINERS = {"video/mp4": "audio/mp4", "video/webm": "audio/webm", "video/3gpp": "audio/3gpp"}
"""Video containers that may hold only sound, and the audio type they then are."""


def clean_name(name: str | None) -> str | None:
    """A file name safe to show and to save: its last path component, without control characters."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C").strip().strip(".")
    return name[:255] or None


def default_name(kind: str, blob: str, media_type: str) -> str:
    """A name for a blob uploaded without one, e.g. ``image-3fa4c1d2e5f6.png``."""
    return f"{kind}-{blob[:12]}{extension_for(media_type)}"


def media_error(exc: MediaError) -> ServerError:
    """The client-facing error for bytes that cannot be used as the media asked for."""
    if exc.reason == "too_large":
        return PayloadTooLarge(exc.message)
    if exc.reason == "unsupported":
        return UnsupportedMedia(exc.message)
    return Unprocessable(exc.message)


def _amount(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


@dataclass(slots=True)
class _Ticket:
    """One upload admitted by :class:`UploadQuota`."""

    user_id: int
    day: int
    allowance: int | None
    """Bytes this upload may still receive under the daily quota (``None``: no quota)."""
    received: int = 0
    charged: bool = False


class UploadQuota:
    """Per-user upload limits: uploads at once (counted on this node) and bytes per UTC day (counted in
    the database, so every API node sees them, plus what this node is receiving right now)."""

    def __init__(self, settings: Settings, store: FileStore) -> None:
        self._settings = settings
        self._store = store
        self._active: dict[int, int] = {}
        self._receiving: dict[int, int] = {}

    async def admit(self, user_id: int, declared_length: int | None) -> _Ticket:
        """Start an upload, or refuse it with ``quota_exceeded``."""
        active = self._active.get(user_id, 0)
        limit = self._settings.max_concurrent_uploads
        if active >= limit:
            raise RateLimited(
                f"you have {active} uploads in progress, the most this server takes at once; wait for one to finish",
                code=ErrorCode.QUOTA_EXCEEDED,
                retry_after=1.0,
            )
        self._active[user_id] = active + 1  # before the first await, so that concurrent uploads see it
        try:
            now = now_ms()
            day = now // _DAY_MS
            quota = self._settings.upload_quota_bytes
            if not quota:
                return _Ticket(user_id, day, None)
            used = await self._store.uploaded(user_id, day) + self._receiving.get(user_id, 0)
            left = quota - used
            if left <= 0 or (declared_length is not None and declared_length > left):
                retry_after = ((day + 1) * _DAY_MS - now) / 1000
                raise RateLimited(
                    f"you have uploaded {_amount(used)} today and this server takes {_amount(quota)} per user "
                    f"and day ({_amount(max(0, left))} left); more from 00:00 UTC",
                    code=ErrorCode.QUOTA_EXCEEDED,
                    retry_after=max(1.0, retry_after),
                )
            return _Ticket(user_id, day, left)
        except BaseException:
            self._leave(user_id)
            raise

    def receive(self, ticket: _Ticket, size: int) -> None:
        """Count ``size`` more bytes of an upload; ``quota_exceeded`` once past the daily quota."""
        ticket.received += size
        self._receiving[ticket.user_id] = self._receiving.get(ticket.user_id, 0) + size
        if ticket.allowance is not None and ticket.received > ticket.allowance:
            raise RateLimited(
                f"this upload goes past your daily quota of {_amount(self._settings.upload_quota_bytes)}; "
                "more from 00:00 UTC",
                code=ErrorCode.QUOTA_EXCEEDED,
                retry_after=max(1.0, ((ticket.day + 1) * _DAY_MS - now_ms()) / 1000),
            )

    async def charge(self, ticket: _Ticket) -> None:
        """Record what the upload received (once, whether it was stored or refused)."""
        if ticket.charged:
            return
        ticket.charged = True
        try:
            if ticket.received and ticket.allowance is not None:
                await self._store.charge(ticket.user_id, ticket.day, ticket.received)
        except Exception:  # the upload's own outcome matters more than its accounting
            log.warning("cannot record %d uploaded bytes of user %d", ticket.received, ticket.user_id, exc_info=True)
        finally:
            # Only now, so that an upload admitted meanwhile still sees these bytes (here or in the database).
            left = self._receiving.get(ticket.user_id, 0) - ticket.received
            if left > 0:
                self._receiving[ticket.user_id] = left
            else:
                self._receiving.pop(ticket.user_id, None)

    async def finish(self, ticket: _Ticket) -> None:
        """End an upload admitted by :meth:`admit`."""
        try:
            await self.charge(ticket)
        finally:
            self._leave(ticket.user_id)

    def _leave(self, user_id: int) -> None:
        active = self._active.get(user_id, 0) - 1
        if active > 0:
            self._active[user_id] = active
        else:
            self._active.pop(user_id, None)


@dataclass(slots=True)
class _Spooled:
    path: Path
    blob: str
    size: int
    head: bytes


class FileService:
    """Checks, stores and serves blobs; see the module docstring."""

    def __init__(self, settings: Settings, store: FileStore) -> None:
        self._settings = settings
        self._store = store
        self._blobs: BlobStore | None = None
        self.spool_dir = settings.upload_dir or Path(tempfile.gettempdir()) / "im-uploads"
        self.active_uploads = 0
        """Uploads being received or processed right now."""
        self.quota = UploadQuota(settings, store)
        self._decodes = asyncio.Semaphore(settings.max_concurrent_decodes)

    @property
    def blobs(self) -> BlobStore:
        """The blob store (after :meth:`start`)."""
        assert self._blobs is not None, "start() first"
        return self._blobs

    async def start(self, blobs: BlobStore) -> None:
        """Open the blob store and the spool directory (removing what a crashed process left there)."""
        await blobs.start()
        self._blobs = blobs
        await asyncio.to_thread(self._prepare_spool)
        log.info("blob store: %s; spooling uploads in %s", blobs.kind, self.spool_dir)

    def _prepare_spool(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - _STALE_SPOOL
        for path in self.spool_dir.glob("upload-*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    async def stop(self) -> None:
        """Close the blob store."""
        if self._blobs is not None:
            await self._blobs.close()

    def limits(self) -> FileLimits:
        """What this server accepts."""
        return FileLimits(
            max_bytes={kind: self._settings.max_upload_bytes(kind) for kind in KINDS},
            refused_types=list(self._settings.refused_types),
            refused_extensions=list(self._settings.refused_extensions),
        )

    # Uploads ------------------------------------------------------------------------------------------

    async def upload(
        self,
        user_id: int,
        body: AsyncIterator[bytes],
        *,
        kind: MediaKind | None,
        name: str | None,
        declared_length: int | None,
    ) -> Upload:
        """Receive, check and store one upload; see the module docstring.

        Args:
            user_id: The uploader.
            body: The request body, as it arrives.
            kind: What the bytes must be; detected from them if ``None``.
            name: The file name the client gave.
            declared_length: ``Content-Length``, if the client sent one (checked against the limit first).
        """
        limit = self._settings.max_upload_bytes(kind) if kind else max(map(self._settings.max_upload_bytes, KINDS))
        what = f"{kind} " if kind else ""
        if declared_length is not None and declared_length > limit:
            raise PayloadTooLarge(
                f"the {what}file is {declared_length:,} bytes; the most this server takes is {limit:,}"
            )
        name = clean_name(name)
        self._refuse_extension(name)
        ticket = await self.quota.admit(user_id, declared_length)
        self.active_uploads += 1
        spooled: _Spooled | None = None
        thumbnail_path: Path | None = None
        try:
            try:
                spooled = await self._spool(body, limit, what, ticket)
            finally:
                await self.quota.charge(ticket)
            media_type = await asyncio.to_thread(sniff, spooled.head, spooled.path)
            if media_type in self._settings.refused_types:
                raise UnsupportedMedia(f"this server does not accept {media_type} files", code=ErrorCode.REFUSED_TYPE)
            record, thumbnail_path = await self._read_media(spooled, media_type, kind)
            if kind is None and spooled.size > self._settings.max_upload_bytes(record.kind):
                record = BlobRecord(spooled.blob, spooled.size, media_type, "file")  # too big for its kind
            await self._put(spooled.blob, spooled.path, spooled.size, record.media_type)
            if record.thumbnail is not None and thumbnail_path is not None:
                thumb = record.thumbnail
                await self._put(thumb.id, thumbnail_path, thumb.size, thumb.media_type)
            final_name = name or default_name(kind or record.kind, spooled.blob, record.media_type)
            stored = await self._store.record_upload(record, user_id=user_id, name=final_name, now=now_ms())
            return _upload(stored, kind or record.kind, final_name)
        finally:
            for path in (spooled.path if spooled else None, thumbnail_path):
                if path is not None:
                    _remove(path)
            self.active_uploads -= 1
            await self.quota.finish(ticket)

    def _refuse_extension(self, name: str | None) -> None:
        if name is None:
            return
        lowered = name.lower()
        for extension in self._settings.refused_extensions:
            if lowered.endswith(extension):
                raise UnsupportedMedia(f"this server does not accept {extension} files", code=ErrorCode.REFUSED_TYPE)

    async def _spool(self, body: AsyncIterator[bytes], limit: int, what: str, ticket: _Ticket) -> _Spooled:
        loop = asyncio.get_running_loop()
        descriptor, raw_path = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.spool_dir)
        path = Path(raw_path)
        digest = hashlib.sha256()
        size = 0
        head = bytearray()
        pending: list[bytes] = []
        pending_size = 0
        try:
            with os.fdopen(descriptor, "wb") as file:
                try:
                    async for chunk in body:
                        if not chunk:
                            continue
                        size += len(chunk)
                        self.quota.receive(ticket, len(chunk))
                        if size > limit:
                            raise PayloadTooLarge(f"the {what}file is over {limit:,} bytes, the most this server takes")
                        if len(head) < SNIFF_BYTES:
                            head += chunk[: SNIFF_BYTES - len(head)]
                        pending.append(chunk)
                        pending_size += len(chunk)
                        if pending_size >= _FLUSH:
                            await loop.run_in_executor(None, _write, file, digest, pending)
                            pending, pending_size = [], 0
                except ClientDisconnect:
                    log.info("upload interrupted by the client after %d bytes", size)
                    raise BadRequest("the upload was interrupted") from None
                if pending:
                    await loop.run_in_executor(None, _write, file, digest, pending)
            if size == 0:
                raise BadRequest("the file is empty")
        except BaseException:
            _remove(path)
            raise
        return _Spooled(path, digest.hexdigest(), size, bytes(head))

    async def _read_media(
        self, spooled: _Spooled, media_type: str, kind: MediaKind | None
    ) -> tuple[BlobRecord, Path | None]:
        """What the bytes are, checked against the kind asked for (or detected without one)."""
        known = await self._store.get(spooled.blob)
        if known is not None and (
            kind in ("file", known.kind) or (kind is None and (known.kind != "file" or _guess(media_type) == "file"))
        ):
            return known, None  # read before; identical bytes read the same
        plain = BlobRecord(spooled.blob, spooled.size, media_type, "file")
        wanted = kind or _guess(media_type)
        if wanted == "file" or (kind is None and spooled.size > self._settings.max_upload_bytes(wanted)):
            return plain, None  # a file, or too big for the kind it looks like: it is not read further
        try:
            if wanted == "image":
                return await self._image(spooled, media_type, kind)
            async with self._decodes:  # a crafted container can keep a reader busy for seconds
                info = await asyncio.to_thread(probe_av, spooled.path, media_type)
        except MediaError as exc:
            if kind is None and exc.reason != "corrupt":
                return plain, None  # not usable as the media it looked like: it goes as a plain file
            hint = "" if kind is None else "; send it as a file instead"
            raise media_error(MediaError(exc.message + hint, exc.reason)) from None
        return self._av(spooled, media_type, kind, info), None

    async def _image(
        self, spooled: _Spooled, media_type: str, kind: MediaKind | None
    ) -> tuple[BlobRecord, Path | None]:
        if media_type not in IMAGE_TYPES:
            raise MediaError(f"{media_type} is not a picture this server accepts as an image", "unsupported")
        descriptor, raw = tempfile.mkstemp(prefix="upload-thumb-", dir=self.spool_dir)
        os.close(descriptor)
        thumbnail_path = Path(raw)
        try:
            async with self._decodes:  # each decode may take image_decode_memory: only so many at once
                info = await asyncio.to_thread(
                    probe_image,
                    spooled.path,
                    max_pixels=self._settings.max_image_pixels,
                    thumbnail_size=self._settings.thumbnail_size,
                    thumbnail_path=thumbnail_path,
                    budget=self._settings.image_decode_memory,
                )
            thumb_blob, thumb_size = await asyncio.to_thread(_hash_file, thumbnail_path)
        except BaseException:
            _remove(thumbnail_path)
            raise
        thumbnail = BlobRecord(
            thumb_blob, thumb_size, info.thumbnail_type, "image", info.thumbnail_width, info.thumbnail_height
        )
        record = BlobRecord(
            spooled.blob, spooled.size, info.media_type, "image", info.width, info.height, thumbnail=thumbnail
        )
        return record, thumbnail_path

    def _av(self, spooled: _Spooled, media_type: str, kind: MediaKind | None, info: AvInfo) -> BlobRecord:
        detected: MediaKind = "video" if info.has_video else "voice"
        if kind is not None and kind != detected:
            if kind == "voice":
                raise UnsupportedMedia("this file has pictures: send it as a video")
            raise UnsupportedMedia(f"this {media_type} file has no video track: send it as a voice note")
        if detected == "voice":
            media_type = _AV_CONTAINERS.get(media_type, media_type)
        return BlobRecord(
            spooled.blob,
            spooled.size,
            media_type,
            detected,
            info.width if info.has_video else None,
            info.height if info.has_video else None,
            info.duration_ms,
        )

    async def _put(self, blob: str, path: Path, size: int, media_type: str) -> None:
        try:
            await self.blobs.put(blob, path, size=size, media_type=media_type)
        except BlobStoreError as exc:
            log.warning("blob store: cannot store %s: %s", blob, exc)
            raise Unavailable("the file store is not available; try again", retry_after=2.0) from None

    # Downloads ----------------------------------------------------------------------------------------

    async def authorize(self, user_id: int, blob: str) -> Usable:
        """The blob, if ``user_id`` uploaded it or is in a conversation where it was sent (and can see that
        message); ``blob_not_found`` otherwise, so that ids of other people's files reveal nothing."""
        usable = await self._store.usable(blob, user_id)
        if usable is None:
            raise NotFound("no such file, or not one shared with you", code=ErrorCode.BLOB_NOT_FOUND)
        return usable

    async def read(self, blob: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """The bytes ``[offset, offset + length)`` of a blob, streamed from the store."""
        try:
            return await self.blobs.read(blob, offset, length)
        except BlobNotFound:
            log.error("blob %s is recorded but missing from the %s store", blob, self.blobs.kind)
            raise NotFound("the file is missing from the store", code=ErrorCode.BLOB_NOT_FOUND) from None
        except BlobStoreError as exc:
            log.warning("blob store: cannot read %s: %s", blob, exc)
            raise Unavailable("the file store is not available; try again", retry_after=2.0) from None


def _remove(path: Path) -> None:
    # A quick unlink; run inline even in coroutines so that cleanup cannot be skipped by a cancellation.
    with contextlib.suppress(OSError):
        os.unlink(path)


def _write(file: BinaryIO, digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        file.write(chunk)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while block := file.read(_FLUSH):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _guess(media_type: str) -> MediaKind:
    if media_type in IMAGE_TYPES:
        return "image"
    if media_type in AUDIO_TYPES:
        return "voice"
    if media_type in VIDEO_TYPES:
        return "video"
    return "file"


def _upload(record: BlobRecord, kind: str, name: str) -> Upload:
    thumbnail = record.thumbnail
    return Upload.model_validate(
        {
            "blob": record.id,
            "kind": kind,
            "name": name,
            "size": record.size,
            "media_type": record.media_type,
            "width": record.width,
            "height": record.height,
            "duration_ms": record.duration_ms,
            "thumbnail": None
            if thumbnail is None
            else {
                "blob": thumbnail.id,
                "media_type": thumbnail.media_type,
                "width": thumbnail.width,
                "height": thumbnail.height,
                "size": thumbnail.size,
            },
        }
    )
