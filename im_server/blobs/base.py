"""The blob store interface: content-addressed bytes, written whole and read by byte range.

A blob's id is the lowercase hex SHA-256 of its bytes, so identical uploads are stored once and a blob
never changes. :meth:`BlobStore.put` reads a finished file from disk (uploads are spooled and hashed
first) and returns only once the blob is durable in the store; a put that fails leaves nothing behind.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["BlobNotFound", "BlobStore", "BlobStoreError"]


class BlobStoreError(Exception):
    """The store could not be reached or refused the operation; retrying later may help."""


class BlobNotFound(KeyError):
    """No blob with this id is stored."""


class BlobStore(abc.ABC):
    """Where the bytes of uploaded files live."""

    kind: str
    """A short name for logs and health: ``nats`` or ``s3``."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect, and create the bucket if it does not exist."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    async def put(self, blob: str, path: Path, *, size: int, media_type: str) -> bool:
        """Store the file at ``path`` (whose SHA-256 is ``blob``) and return once it is durable.

        Returns ``False`` if the blob was stored already (nothing is written then). On failure nothing
        of this put remains in the store.
        """

    @abc.abstractmethod
    async def size(self, blob: str) -> int | None:
        """The blob's size in bytes, or ``None`` if it is not stored."""

    async def exists(self, blob: str) -> bool:
        """Whether the blob is stored."""
        return await self.size(blob) is not None

    @abc.abstractmethod
    async def read(self, blob: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``[offset, offset + length)`` of a blob (to its end without ``length``), streamed.

        Awaiting this looks the blob up (raising :class:`BlobNotFound` before any byte is produced); the
        returned iterator then fetches the bytes a piece at a time.
        """

    @abc.abstractmethod
    async def delete(self, blob: str) -> bool:
        """Remove a blob; ``False`` if it was not stored."""
