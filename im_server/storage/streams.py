"""Streaming messages: writes into an open stream, closing it, and closing the ones left idle.

A stream is opened by the group commit like any message (:class:`~.messages.NewMessage` with ``stream``),
which stores the message with ``meta.stream = "open"`` and a row in ``streams``. Every write then runs in
one transaction that reads the text so far from the message row and writes the new text back, so any API
node can take any write, and nothing of a stream lives in a node's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, select, update

from im_schema.content import TextContent
from im_schema.errors import ErrorCode
from im_schema.streams import StreamState

from ..errors import Refusal
from .engine import Database
from .message_rows import Written, _meta, _written
from .revisions import _target
from .tables import messages, streams

__all__ = ["StreamStore", "StreamWrite"]


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """The outcome of a write: the message as stored now, and whether its text or state changed."""

    written: Written
    text: str
    state: StreamState
    changed: bool


def _state(value: object) -> StreamState:
    return "finished" if value == "finished" else "open" if value == "open" else "abandoned"


class StreamStore:
    """Named transactions on streaming messages."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def open_count(self, sender: int) -> int:
        """How many streams the user has open."""
        return await self._db.read(_open_count, sender)

    async def write(
        self,
        conversation: str,
        seq: int,
        actor: int,
        *,
        offset: int | None,
        text: str | None,
        max_len: int,
        close: StreamState | None,
        now: int,
    ) -> StreamWrite:
        """Write ``text`` at ``offset`` (if given) and, with ``close`` (``finished`` or ``abandoned``),
        close the stream. Raises :class:`~im_server.errors.Refusal`."""
        return await self._db.write(_write, conversation, seq, actor, offset, text, max_len, close, now)

    async def find(self, sender: int, client_msg_id: str) -> Written | None:
        """The message ``sender`` stored with ``client_msg_id``, if any."""
        return await self._db.read(_find, sender, client_msg_id)

    async def current(self, conversation: str, seq: int) -> Written:
        """The message as stored now (a repeated open answers it: its text may have grown since)."""
        return await self._db.read(_reread, conversation, seq)

    async def expire(self, *, idle_before: int, opened_before: int, limit: int = 100) -> list[StreamWrite]:
        """Abandon streams idle since ``idle_before`` or open since ``opened_before``; returns those this call
        closed (another node's sweep may close some of the same at once: each is closed by one)."""
        return await self._db.write(_expire, idle_before, opened_before, limit)


def _find(conn: Connection, sender: int, client_msg_id: str) -> Written | None:
    row = conn.execute(
        select(messages).where(messages.c.sender_id == sender, messages.c.client_msg_id == client_msg_id)
    ).one_or_none()
    return None if row is None else _written(row, duplicate=True)


def _open_count(conn: Connection, sender: int) -> int:
    return int(
        conn.execute(select(func.count()).select_from(streams).where(streams.c.sender_id == sender)).scalar_one()
    )


def _set_state(conn: Connection, row: Any, state: StreamState, body: str | None) -> Written:
    meta = _meta(row) or {}
    meta["stream"] = state
    values: dict[str, Any] = {"meta": orjson.dumps(meta).decode()}
    if body is not None:
        values["body"] = body
    where = (messages.c.conversation_id == row.conversation_id, messages.c.seq == row.seq)
    conn.execute(update(messages).where(*where).values(**values))
    return _written(conn.execute(select(messages).where(*where)).one(), duplicate=False)


def _write(
    conn: Connection,
    conversation: str,
    seq: int,
    actor: int,
    offset: int | None,
    text: str | None,
    max_len: int,
    close: StreamState | None,
    now: int,
) -> StreamWrite:
    key = (streams.c.conversation_id == conversation, streams.c.seq == seq)
    # Locked first (on PostgreSQL): a sweep or a finish on another node that closes it meanwhile is
    # waited for, and what is read below is then what they left.
    still_open = conn.execute(select(streams.c.seq).where(*key).with_for_update()).first() is not None
    row, _ = _target(conn, conversation, seq, actor)  # the actor must still be a member who sees it
    state = (_meta(row) or {}).get("stream")
    if state is None:
        raise Refusal(ErrorCode.BAD_REQUEST, "this is not a streaming message")
    if row.sender_id != actor:
        raise Refusal(ErrorCode.FORBIDDEN, "only the sender writes a streaming message")
    current = TextContent.model_validate_json(row.body).text if row.kind == "text" else ""
    if state != "open" or row.kind != "text" or not still_open:
        if close is not None and (offset is None or text is None or current[:offset] + text == current):
            return StreamWrite(_written(row, duplicate=True), current, _state(state), False)  # finished twice
        raise Refusal(ErrorCode.STREAM_CLOSED, "the stream was closed; it takes no more text")
    new = current
    if offset is not None and text is not None:
        if offset > len(current):
            raise Refusal(ErrorCode.CONFLICT, f"offset {offset} is past the text so far ({len(current)} characters)")
        new = current[:offset] + text
        if len(new) > max_len:
            raise Refusal(ErrorCode.TEXT_TOO_LONG, f"text is longer than {max_len} characters")
        if not new:
            raise Refusal(ErrorCode.BAD_REQUEST, "a message needs at least one character")
    changed = new != current
    body = TextContent(text=new).model_dump_json() if changed else None
    if close is None:
        if body is not None:
            conn.execute(
                update(messages)
                .where(messages.c.conversation_id == conversation, messages.c.seq == seq)
                .values(body=body)
            )
        conn.execute(update(streams).where(*key).values(touched_at=now, length=len(new)))
        written = _written(row, duplicate=False) if body is None else _reread(conn, conversation, seq)
        return StreamWrite(written, new, "open", changed)
    conn.execute(delete(streams).where(*key))
    return StreamWrite(_set_state(conn, row, close, body), new, close, True)


def _reread(conn: Connection, conversation: str, seq: int) -> Written:
    row = conn.execute(select(messages).where(messages.c.conversation_id == conversation, messages.c.seq == seq)).one()
    return _written(row, duplicate=False)


def _expire(conn: Connection, idle_before: int, opened_before: int, limit: int) -> list[StreamWrite]:
    due = conn.execute(
        select(streams.c.conversation_id, streams.c.seq)
        .where((streams.c.touched_at < idle_before) | (streams.c.opened_at < opened_before))
        .order_by(streams.c.touched_at)
        .limit(limit)
    ).all()
    closed: list[StreamWrite] = []
    for stream in due:
        gone = conn.execute(
            delete(streams).where(streams.c.conversation_id == stream.conversation_id, streams.c.seq == stream.seq)
        )
        if gone.rowcount != 1:
            continue  # closed meanwhile, by its sender or another node's sweep
        row = conn.execute(
            select(messages).where(messages.c.conversation_id == stream.conversation_id, messages.c.seq == stream.seq)
        ).one_or_none()
        if row is None or (_meta(row) or {}).get("stream") != "open":
            continue
        if row.kind != "text":
            _set_state(conn, row, "abandoned", None)  # recalled meanwhile: nothing to tell
            continue
        text = TextContent.model_validate_json(row.body).text
        closed.append(StreamWrite(_set_state(conn, row, "abandoned", None), text, "abandoned", True))
    return closed
