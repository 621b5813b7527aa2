"""Uploaded blobs: what the server read from them, who uploaded them, where they were shared.

The bytes live in a blob store (:mod:`im_server.blobs`); these tables decide who may see them:

- ``blobs``: one row per stored blob, with what was read from its bytes (type, size, dimensions,
  duration, thumbnail). The row is written after the blob is durable in the store.
- ``blob_owners``: who uploaded it (each user who sent these exact bytes), with the name they gave.
- ``blob_shares``: every message that carried it, as ``(blob, conversation, seq)``, written in the
  transaction that stores the message (see :func:`share_rows`). A member of the conversation who can see
  that seq (it is after they joined, and before they left, if they did) may download the blob.
- ``upload_usage``: bytes each user uploaded per UTC day (days since the epoch), for the upload quota;
  rows older than yesterday are dropped as new ones are charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from im_schema.content import MEDIA_KINDS, Content

from ._util import insert_ignore
from .engine import Database
from .tables import members, metadata

__all__ = [
    "BlobRecord",
    "FileStore",
    "Usable",
    "blob_owners",
    "blob_shares",
    "blobs",
    "insert_shares",
    "share_rows",
    "upload_usage",
]

blobs = Table(
    "blobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("duration_ms", BigInteger, nullable=True),
    Column("thumbnail", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

blob_owners = Table(
    "blob_owners",
    metadata,
    Column("blob_id", String(64), ForeignKey("blobs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("blob_id", "user_id"),
)

blob_shares = Table(
    "blob_shares",
    metadata,
    Column("blob_id", String(64), ForeignKey("blobs.id", ondelete="CASCADE"), nullable=False),
    Column("conversation_id", String(48), nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("blob_id", "conversation_id", "seq"),
)


upload_usage = Table(
    "upload_usage",
    metadata,
    Column("user_id", BigInteger, nullable=False),
    Column("day", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "day"),
)


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """A stored blob and what was read from its bytes."""

    id: str
    size: int
    media_type: str
    kind: str
    """What the bytes were checked as: ``image`` (decoded, has a thumbnail), ``voice`` or ``video``
    (duration read), or ``file`` (nothing beyond the type)."""
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    thumbnail: BlobRecord | None = None


@dataclass(frozen=True, slots=True)
class Usable:
    """A blob someone may use, and the name they uploaded it with (``None`` if they did not upload it)."""

    blob: BlobRecord
    uploaded_as: str | None


class FileStore:
    """Named transactions on blobs, their owners and their shares."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_upload(self, record: BlobRecord, *, user_id: int, name: str, now: int) -> BlobRecord:
        """Remember a blob (and its thumbnail) and that ``user_id`` uploaded it as ``name``.

        A blob stored before keeps what was read from it then, unless this upload read more (a file
        uploaded again as an image gains its dimensions and thumbnail). Returns the record as stored.
        """
        return await self._db.write(_record_upload, record, user_id, name, now)

    async def get(self, blob: str) -> BlobRecord | None:
        """A blob's record, whoever asks."""
        return await self._db.read(_get, blob)

    async def usable(self, blob: str, user_id: int) -> Usable | None:
        """The blob, if ``user_id`` uploaded it or can see a message that carried it; else ``None``."""
        return await self._db.read(_usable, blob, user_id)

    async def uploaded(self, user_id: int, day: int) -> int:
        """Bytes ``user_id`` uploaded on ``day`` (UTC days since the epoch)."""
        return await self._db.read(_uploaded, user_id, day)

    async def charge(self, user_id: int, day: int, size: int) -> None:
        """Add ``size`` bytes to what ``user_id`` uploaded on ``day``."""
        await self._db.write(_charge, user_id, day, size)


# Transactions -------------------------------------------------------------------------------------


def _row_values(record: BlobRecord, now: int) -> dict[str, Any]:
    return {
        "id": record.id,
        "size": record.size,
        "media_type": record.media_type,
        "kind": record.kind,
        "width": record.width,
        "height": record.height,
        "duration_ms": record.duration_ms,
        "thumbnail": record.thumbnail.id if record.thumbnail else None,
        "created_at": now,
    }


def _upsert_blob(conn: Connection, record: BlobRecord, now: int) -> None:
    existing = conn.execute(select(blobs.c.kind).where(blobs.c.id == record.id)).scalar_one_or_none()
    values = _row_values(record, now)
    if existing is None:
        conn.execute(insert_ignore(conn.dialect.name, blobs).values(**values))
    elif existing == "file" and record.kind != "file":
        del values["id"], values["created_at"]
        conn.execute(update(blobs).where(blobs.c.id == record.id).values(**values))


def _record_upload(conn: Connection, record: BlobRecord, user_id: int, name: str, now: int) -> BlobRecord:
    if record.thumbnail is not None:
        _upsert_blob(conn, record.thumbnail, now)
        _own(conn, record.thumbnail.id, user_id, f"thumbnail-{name}", now)
    _upsert_blob(conn, record, now)
    _own(conn, record.id, user_id, name, now)
    stored = _get(conn, record.id)
    assert stored is not None
    return stored


def _own(conn: Connection, blob: str, user_id: int, name: str, now: int) -> None:
    updated = conn.execute(
        update(blob_owners)
        .where(blob_owners.c.blob_id == blob, blob_owners.c.user_id == user_id)
        .values(name=name[:255])
    )
    if not updated.rowcount:
        conn.execute(
            insert_ignore(conn.dialect.name, blob_owners).values(
                blob_id=blob, user_id=user_id, name=name[:255], created_at=now
            )
        )


_thumbs = blobs.alias("thumbs")


def _get(conn: Connection, blob: str) -> BlobRecord | None:
    row = conn.execute(
        select(
            blobs,
            _thumbs.c.id.label("t_id"),
            _thumbs.c.size.label("t_size"),
            _thumbs.c.media_type.label("t_media_type"),
            _thumbs.c.width.label("t_width"),
            _thumbs.c.height.label("t_height"),
        )
        .select_from(blobs.outerjoin(_thumbs, _thumbs.c.id == blobs.c.thumbnail))
        .where(blobs.c.id == blob)
    ).one_or_none()
    if row is None:
        return None
    thumbnail = None
    if row.t_id is not None:
        thumbnail = BlobRecord(row.t_id, row.t_size, row.t_media_type, "image", row.t_width, row.t_height)
    return BlobRecord(
        row.id, row.size, row.media_type, row.kind, row.width, row.height, row.duration_ms, thumbnail=thumbnail
    )


def _usable(conn: Connection, blob: str, user_id: int) -> Usable | None:
    owner = conn.execute(
        select(blob_owners.c.name).where(blob_owners.c.blob_id == blob, blob_owners.c.user_id == user_id)
    ).one_or_none()
    if owner is None:
        visible = conn.execute(
            select(
                exists().where(
                    blob_shares.c.blob_id == blob,
                    members.c.conversation_id == blob_shares.c.conversation_id,
                    members.c.user_id == user_id,
                    blob_shares.c.seq > members.c.joined_seq,
                    # A member who left keeps the history up to their leaving, and no more.
                    or_(members.c.left_seq.is_(None), blob_shares.c.seq <= members.c.left_seq),
                )
            )
        ).scalar()
        if not visible:
            return None
    record = _get(conn, blob)
    if record is None:
        return None
    return Usable(record, owner.name if owner is not None else None)


def _uploaded(conn: Connection, user_id: int, day: int) -> int:
    used = conn.execute(
        select(upload_usage.c.bytes).where(upload_usage.c.user_id == user_id, upload_usage.c.day == day)
    ).scalar_one_or_none()
    return int(used or 0)


def _charge(conn: Connection, user_id: int, day: int, size: int) -> None:
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = module.insert(upload_usage).values(user_id=user_id, day=day, bytes=size)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[upload_usage.c.user_id, upload_usage.c.day],
            set_={"bytes": upload_usage.c.bytes + statement.excluded.bytes},
        )
    )
    conn.execute(delete(upload_usage).where(upload_usage.c.user_id == user_id, upload_usage.c.day < day - 1))


# Shares, written by the message commit ------------------------------------------------------------


def share_rows(content: Content, conversation: str, seq: int) -> list[dict[str, Any]]:
    """The ``blob_shares`` rows of one stored message (none for text)."""
    if content.kind not in MEDIA_KINDS:
        return []
    refs = [getattr(content, "blob", None)]
    for preview in (getattr(content, "thumbnail", None), getattr(content, "poster", None)):
        if preview is not None:
            refs.append(preview.blob)
    return [{"blob_id": blob, "conversation_id": conversation, "seq": seq} for blob in dict.fromkeys(refs) if blob]


def insert_shares(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Record shares inside the transaction that stores their messages."""
    conn.execute(insert_ignore(conn.dialect.name, blob_shares), list(rows))
