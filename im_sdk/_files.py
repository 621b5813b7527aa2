"""The I/O-free half of uploads and downloads, shared by both clients.

- :func:`open_source` turns a path, bytes or a file object into something both clients can stream
  (and rewind, to retry an upload).
- :func:`media_request` builds the message that sends an uploaded blob; :func:`check_caption` refuses its
  caption before the upload.
- :class:`DownloadPlan` decides how to resume a download into ``<path>.part`` and checks, at the end,
  that the bytes hash to the blob's id (a blob's id is the SHA-256 of its bytes).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union, get_args

import httpx
from pydantic import ConfigDict, TypeAdapter

from im_schema.content import Caption, ImageContent, MediaContent, MediaKind, OutgoingFile, OutgoingMedia
from im_schema.files import Upload
from im_schema.ids import is_conversation_id
from im_schema.models import Message
from im_schema.rest import SendMessageRequest

from ._base import new_client_msg_id
from .errors import TransportError

__all__ = [
    "CHUNK_SIZE",
    "DownloadPlan",
    "Progress",
    "Source",
    "Spool",
    "check_caption",
    "media_of",
    "media_request",
    "open_source",
    "transfer_timeout",
]

CHUNK_SIZE = 256 * 1024
"""Bytes read from the source per piece of an upload."""

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""What can be uploaded: a path, the bytes themselves, or a binary file object (read from where it is)."""

Progress = Callable[[int, "int | None"], None]
"""Called as bytes go out or come in, with ``(done, total)``; ``total`` is ``None`` when unknown."""


def transfer_timeout(base: httpx.Timeout) -> httpx.Timeout:
    """The client's timeouts, with time for the server to store a large file before it answers."""
    return httpx.Timeout(connect=base.connect, read=max(base.read or 0.0, 300.0), write=base.write, pool=base.pool)


@dataclass
class Spool:
    """An opened upload source."""

    file: IO[bytes]
    size: int | None
    name: str | None
    owned: bool
    """Whether :meth:`close` closes :attr:`file` (it was opened here)."""
    start: int | None
    """Where the upload starts in :attr:`file`, if it can seek back there for a retry."""
    sent: int = 0

    def rewind(self) -> bool:
        """Go back to the start for another attempt; ``False`` if the source cannot seek."""
        if self.start is None:
            return False
        self.file.seek(self.start)
        self.sent = 0
        return True

    def read(self) -> bytes:
        """The next piece (empty at the end)."""
        return self.file.read(CHUNK_SIZE)

    def advance(self, chunk: bytes, progress: Progress | None) -> None:
        """Count a piece as handed to the transport."""
        self.sent += len(chunk)
        if progress is not None:
            progress(self.sent, self.size)

    def chunks(self, progress: Progress | None) -> Iterator[bytes]:
        """The source, piece by piece (for the blocking client)."""
        while chunk := self.read():
            self.advance(chunk, progress)
            yield chunk

    def close(self) -> None:
        """Close the file if it was opened here."""
        if self.owned:
            self.file.close()


def open_source(source: Source, name: str | None = None) -> Spool:
    """Open what is to be uploaded; a path gives its file name unless ``name`` is given."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return Spool(io.BytesIO(data), len(data), name, owned=True, start=0)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        opened: IO[bytes] = path.open("rb")
        return Spool(opened, os.fstat(opened.fileno()).st_size, name or path.name, owned=True, start=0)
    file = source
    start: int | None = None
    size: int | None = None
    try:
        if file.seekable():
            start = file.tell()
            size = file.seek(0, io.SEEK_END) - start
            file.seek(start)
    except (OSError, ValueError, AttributeError):
        start = size = None
    if name is None:
        given = getattr(file, "name", None)
        name = Path(given).name if isinstance(given, str) else None
    return Spool(file, size, name, owned=False, start=start)


_OUTGOING: dict[str, type[OutgoingMedia]] = {
    model.model_fields["kind"].default: model for model in get_args(OutgoingMedia)
}
"""The model a client sends for each media kind, read from :data:`~im_schema.content.OutgoingMedia`."""


_CAPTION: TypeAdapter[str] = TypeAdapter(Caption, config=ConfigDict(title="caption"))


def check_caption(caption: str | None) -> None:
    """Raise the schema's ``ValidationError`` for a caption it refuses (blank, too long, with NUL): before the
    upload, which would otherwise be made for a send that cannot succeed."""
    if caption is not None:
        _CAPTION.validate_python(caption)


def media_request(
    to: int | str,
    upload: Upload,
    *,
    kind: MediaKind | None = None,
    caption: str | None = None,
    name: str | None = None,
    poster: Upload | None = None,
    client_msg_id: str | None = None,
) -> SendMessageRequest:
    """The send of an uploaded blob, as ``kind`` (the kind it was uploaded as by default)."""
    values: dict[str, Any] = {"blob": upload.blob, "caption": caption, "name": name}
    if poster is not None:
        values["poster"] = poster.blob
    # A kind a newer server detected, that this version cannot send as such, goes as a file.
    content = _OUTGOING.get(kind or upload.kind, OutgoingFile)(**values)
    key = client_msg_id or new_client_msg_id()
    if isinstance(to, str) and is_conversation_id(to):
        return SendMessageRequest(conversation=to, client_msg_id=key, content=content)
    return SendMessageRequest(to=to, client_msg_id=key, content=content)


def media_of(message: Message) -> MediaContent:
    """The media content of a message; ``TypeError`` for text and other kinds."""
    content = message.content
    if not isinstance(content, MediaContent):
        raise TypeError(f"message {message.conversation}#{message.seq} carries no file (it is {content.kind})")
    return content


def _safe_name(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    return "".join(char for char in name if char.isprintable()) or "download"


def _unused(target: Path) -> Path:
    """``target``, or the first of ``name (1).ext``, ``name (2).ext``... that does not exist yet."""
    if not target.exists():
        return target
    stem, suffix = target.stem, target.suffix
    for number in range(1, 10_000):
        candidate = target.with_name(f"{stem} ({number}){suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"{target} and 9,999 numbered copies exist already")


@dataclass
class DownloadPlan:
    """Where a blob goes and how to resume it; see the module docstring."""

    blob: str
    size: int
    target: Path
    """The final path (written as :attr:`part` first, renamed when complete and verified)."""
    name: str
    done: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    @classmethod
    def for_message(
        cls, message: Message, path: str | os.PathLike[str] | None, *, thumbnail: bool, overwrite: bool = False
    ) -> DownloadPlan:
        """A plan for a message's file (or its thumbnail): into ``path``, or into the directory
        ``path`` under the file's name, or into the current directory.

        A ``path`` that ends with ``/`` is a directory, created if missing. An existing file is never
        overwritten (unless ``overwrite``): the download goes to ``name (1).ext``, ``name (2).ext``...
        """
        content = media_of(message)
        blob, size, name = content.blob, content.size, content.name
        if thumbnail:
            preview = content.thumbnail if isinstance(content, ImageContent) else getattr(content, "poster", None)
            if preview is None:
                raise TypeError(f"message {message.conversation}#{message.seq} has no thumbnail")
            stem = Path(name).stem or "file"
            suffix = ".png" if preview.media_type == "image/png" else ".jpg"
            blob, size, name = preview.blob, preview.size, f"{stem}-thumbnail{suffix}"
        name = _safe_name(name)
        text = os.fspath(path) if path is not None else ""
        target = Path(text) if text else Path.cwd()
        if text.endswith(("/", os.sep)):
            target.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            target = target / name
        return cls(blob=blob, size=size, target=target if overwrite else _unused(target), name=name)

    @property
    def part(self) -> Path:
        """The partial file."""
        return self.target.with_name(self.target.name + ".part")

    def resume(self) -> dict[str, str]:
        """Look at an existing partial file; the headers of the next request (a ``Range`` to resume)."""
        self.digest = hashlib.sha256()
        self.done = 0
        if self.part.exists():
            if self.part.stat().st_size > self.size:
                self.part.unlink()
            else:
                with self.part.open("rb") as file:
                    while block := file.read(1024 * 1024):
                        self.digest.update(block)
                        self.done += len(block)
        if 0 < self.done < self.size:
            return {"Range": f"bytes={self.done}-", "If-Range": f'"{self.blob}"'}
        return {}

    def accept(self, status: int, headers: Any) -> str:
        """Check the answer to :meth:`resume`'s request; returns the mode to open :attr:`part` with."""
        if status == 206:
            content_range = headers.get("content-range", "")
            if not content_range.startswith(f"bytes {self.done}-"):
                raise TransportError(f"the server sent {content_range!r} for a resume from byte {self.done}")
            return "ab"
        self.digest = hashlib.sha256()
        self.done = 0
        return "wb"

    def add(self, chunk: bytes, progress: Progress | None) -> None:
        """Count bytes written to the partial file."""
        self.digest.update(chunk)
        self.done += len(chunk)
        if progress is not None:
            progress(self.done, self.size)

    @property
    def complete(self) -> bool:
        """Whether every byte is in the partial file."""
        return self.done >= self.size

    def finish(self) -> Path:
        """Verify the partial file and move it into place."""
        if self.done != self.size or self.digest.hexdigest() != self.blob:
            self.part.unlink(missing_ok=True)
            raise TransportError(f"the download of {self.name} is corrupt (its SHA-256 does not match); retry")
        os.replace(self.part, self.target)
        return self.target
