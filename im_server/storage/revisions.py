"""Changes to a stored message after the fact: recall and edit."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, delete, select, update

from im_schema.content import RecalledContent, SystemEvent, TextContent
from im_schema.errors import ErrorCode

from ..errors import Refusal
from .engine import Database
from .message_rows import Written, _meta, _written, append_system, preview_of
from .tables import members, mentions, messages

__all__ = ["RevisionTransactions"]


def _target(conn: Connection, conversation: str, seq: int, actor: int) -> tuple[Any, Any]:
    """The message and the actor's membership row, for a recall or an edit."""
    member = conn.execute(
        select(members.c.role, members.c.joined_seq, members.c.left_seq).where(
            members.c.conversation_id == conversation, members.c.user_id == actor
        )
    ).one_or_none()
    if member is None or member.left_seq is not None:
        raise Refusal(ErrorCode.CONVERSATION_NOT_FOUND, "the conversation does not exist")
    row = conn.execute(
        select(messages).where(messages.c.conversation_id == conversation, messages.c.seq == seq)
    ).one_or_none()
    if row is None or row.seq <= member.joined_seq:
        raise Refusal(ErrorCode.NOT_FOUND, "no such message")
    return row, member


def _recall(
    conn: Connection, conversation: str, seq: int, actor: int, window_ms: int, now: int
) -> tuple[Written, Written | None]:
    row, member = _target(conn, conversation, seq, actor)
    if row.kind == "recalled":
        return _written(row, duplicate=True), None
    if row.kind == "system":
        raise Refusal(ErrorCode.FORBIDDEN, "system messages cannot be recalled")
    moderator = conversation.startswith("g:") and member.role in ("owner", "admin")
    if not moderator:
        if row.sender_id != actor:
            raise Refusal(ErrorCode.FORBIDDEN, "you can only recall your own messages")
        if now - row.created_at >= window_ms:
            raise Refusal(ErrorCode.FORBIDDEN, f"messages can be recalled within {window_ms // 1000} seconds")
    body = RecalledContent(by=actor).model_dump_json()
    meta = _meta(row) or {}
    meta.pop("mentions", None)
    meta.pop("all", None)
    conn.execute(
        update(messages)
        .where(messages.c.conversation_id == conversation, messages.c.seq == seq)
        .values(body=body, kind="recalled", meta=orjson.dumps(meta).decode() if meta else None)
    )
    conn.execute(delete(mentions).where(mentions.c.conversation_id == conversation, mentions.c.seq == seq))
    # Quotes of it in replies go too.
    quoting = conn.execute(
        select(messages.c.seq, messages.c.meta).where(
            messages.c.conversation_id == conversation, messages.c.reply_to == seq
        )
    ).all()
    for quote in quoting:
        quote_meta = _meta(quote) or {}
        if "reply" in quote_meta:
            quote_meta["reply"]["preview"] = preview_of("recalled", "")
            conn.execute(
                update(messages)
                .where(messages.c.conversation_id == conversation, messages.c.seq == quote.seq)
                .values(meta=orjson.dumps(quote_meta).decode())
            )
    notice = append_system(conn, conversation, actor, SystemEvent.MESSAGE_RECALLED, {"seq": seq}, now)
    recalled = conn.execute(
        select(messages).where(messages.c.conversation_id == conversation, messages.c.seq == seq)
    ).one()
    return _written(recalled, duplicate=False), notice


def _edit(
    conn: Connection, conversation: str, seq: int, actor: int, text: str, window_ms: int, now: int
) -> tuple[Written, Written]:
    row, _ = _target(conn, conversation, seq, actor)
    if row.sender_id != actor:
        raise Refusal(ErrorCode.FORBIDDEN, "you can only edit your own messages")
    if row.kind != "text":
        raise Refusal(ErrorCode.FORBIDDEN, "only text messages can be edited")
    if now - row.created_at >= window_ms:
        raise Refusal(ErrorCode.FORBIDDEN, f"messages can be edited within {window_ms // 1000} seconds")
    content = TextContent.model_validate_json(row.body).model_copy(update={"text": text})
    meta = _meta(row) or {}
    meta["edited_at"] = now
    conn.execute(
        update(messages)
        .where(messages.c.conversation_id == conversation, messages.c.seq == seq)
        .values(body=content.model_dump_json(), meta=orjson.dumps(meta).decode())
    )
    notice = append_system(conn, conversation, actor, SystemEvent.MESSAGE_EDITED, {"seq": seq, "text": text}, now)
    edited = conn.execute(
        select(messages).where(messages.c.conversation_id == conversation, messages.c.seq == seq)
    ).one()
    return _written(edited, duplicate=False), notice


class RevisionTransactions:
    """The :class:`~.messages.MessageStore` methods of recalling and editing a message.

    Each runs one transaction of this module: a new operation adds its transaction and its method here."""

    _db: Database

    async def recall(
        self, conversation: str, seq: int, actor: int, *, window_ms: int, now: int
    ) -> tuple[Written, Written | None]:
        """Remove a message's content; returns the recalled message and the ``message_recalled`` system
        message (``None`` if it had been recalled already). Raises :class:`~im_server.errors.Refusal`."""
        return await self._db.write(_recall, conversation, seq, actor, window_ms, now)

    async def edit(
        self, conversation: str, seq: int, actor: int, text: str, *, window_ms: int, now: int
    ) -> tuple[Written, Written]:
        """Replace the text of the actor's message; returns it and the ``message_edited`` system message."""
        return await self._db.write(_edit, conversation, seq, actor, text, window_ms, now)
