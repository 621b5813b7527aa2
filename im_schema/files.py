"""Uploading and downloading the blobs that media messages carry.

A media message takes two steps:

1. ``POST /v1/files?kind=image&name=cat.jpg`` with the file's bytes as the raw request body (streamed;
   ``Content-Length`` lets the server refuse an oversized file at once). The server reads the type, size,
   dimensions and duration from the bytes, makes a thumbnail of an image, stores the blob under the
   SHA-256 of its bytes and answers :class:`Upload` once the blob is durable. Without ``kind`` the server
   picks it from the content.
2. Send a message whose content is an :data:`~im_schema.content.OutgoingContent` naming the blob
   (``{"kind": "image", "blob": "<sha256>", "caption": "..."}``), over HTTP or a WebSocket ``send`` frame.

``GET /v1/files/{blob}`` downloads a blob for its uploader and for members of the conversations it was
sent to, with ``Range`` requests for resuming and seeking; ``?name=`` sets the file name it is saved as.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict

from ._tolerant import Tolerant, UnknownValue
from .content import BlobId, FileName, MediaKind, Preview
from .rest import Endpoint, Request

__all__ = [
    "FILES_PATH",
    "DownloadRequest",
    "FileLimits",
    "FileLimitsRequest",
    "Upload",
    "UploadRequest",
    "download_path",
]

FILES_PATH = "/v1/files"
"""Where uploads go; downloads are under ``/v1/files/{blob}``."""


def download_path(blob: str) -> str:
    """The URL path of a blob's download."""
    return f"{FILES_PATH}/{blob}"


class Upload(BaseModel):
    """A stored blob, as the server read it from the bytes, ready to be sent in a message."""

    model_config = ConfigDict(frozen=True)

    blob: BlobId
    kind: Annotated[MediaKind | UnknownValue, Tolerant(MediaKind)]
    """The kind the blob was checked for (what the upload asked for, or what the server detected); a kind a
    newer server detects reads as :class:`~im_schema.UnknownValue` (such a blob can be sent as a file)."""
    name: str
    """The file name (sanitized), used when the message does not name one."""
    size: int
    """Bytes."""
    media_type: str
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    thumbnail: Preview | None = None
    """The server-made thumbnail of an image."""


class FileLimits(BaseModel):
    """What this server accepts, so that a client can refuse a file before sending it."""

    model_config = ConfigDict(frozen=True)

    max_bytes: dict[str, int]
    """The largest upload of each kind, in bytes."""
    refused_types: list[str]
    """Media types the server refuses (as read from the bytes)."""
    refused_extensions: list[str]
    """File name extensions the server refuses, e.g. ``.exe``."""


class UploadRequest(Request[Upload]):
    """Store a blob; the body is the file's raw bytes and these fields go to the query string."""

    endpoint = Endpoint("POST", FILES_PATH, Upload, status=201)

    kind: MediaKind | None = None
    """Check the bytes as this kind; detected from the content when omitted."""
    name: FileName | None = None


class FileLimitsRequest(Request[FileLimits]):
    """This server's upload limits."""

    endpoint = Endpoint("GET", f"{FILES_PATH}/limits", FileLimits)


class DownloadRequest(BaseModel):
    """Download a blob (the answer is its bytes, not JSON); ``Range`` headers may ask for part of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blob: BlobId
    name: FileName | None = None
    """The file name to save it as (``Content-Disposition``)."""

    def path(self) -> str:
        """The URL path."""
        return download_path(self.blob)

    def params(self) -> dict[str, str]:
        """The query string."""
        return self.model_dump(exclude={"blob"}, exclude_none=True)
