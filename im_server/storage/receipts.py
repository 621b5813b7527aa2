"""Read positions and read receipts."""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from im_schema.models import ReadState

from .conversations import _unread_count
from .engine import Database
from .tables import conversations, members, messages

__all__ = ["ReceiptTransactions"]


def _mark_read(conn: Connection, conversation: str, user_id: int, seq: int, now: int) -> ReadState | None:
    state = conn.execute(
        select(members.c.read_seq, members.c.joined_seq, members.c.left_seq, conversations.c.max_seq)
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
    ).one_or_none()
    if state is None:
        return None
    ceiling = state.max_seq if state.left_seq is None else min(state.max_seq, state.left_seq)
    target = min(seq, ceiling)
    if target > state.read_seq:
        conn.execute(
            update(members)
            .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
            .values(read_seq=target, updated_at=now)
        )
    effective = max(state.read_seq, target, state.joined_seq)
    unread = conn.execute(select(_unread_count(conversation, user_id, effective, ceiling))).scalar_one()
    return ReadState(conversation=conversation, read_seq=effective, unread=unread)


def _receipts(conn: Connection, conversation: str, seq: int) -> tuple[int, list[int], list[int]] | None:
    sender = conn.execute(
        select(messages.c.sender_id).where(messages.c.conversation_id == conversation, messages.c.seq == seq)
    ).scalar_one_or_none()
    if sender is None:
        return None
    rows = conn.execute(
        select(members.c.user_id, members.c.read_seq).where(
            members.c.conversation_id == conversation,
            members.c.joined_seq < seq,
            (members.c.left_seq.is_(None)) | (members.c.left_seq >= seq),
            members.c.user_id != sender,
        )
    ).all()
    read = sorted(row.user_id for row in rows if row.read_seq >= seq)
    unread = sorted(row.user_id for row in rows if row.read_seq < seq)
    return sender, read, unread


class ReceiptTransactions:
    """The :class:`~.messages.MessageStore` methods of read positions (moving one's own, the receipts of a message).

    Each runs one transaction of this module: a new operation adds its transaction and its method here."""

    _db: Database

    async def receipts(self, conversation: str, seq: int) -> tuple[int, list[int], list[int]] | None:
        """``(sender, read, unread)`` for a message: the members who could see it, split by read position."""
        return await self._db.read(_receipts, conversation, seq)

    async def mark_read(self, conversation: str, user_id: int, seq: int, *, now: int) -> ReadState | None:
        """Move a member's read position forward to ``seq`` (capped at ``max_seq``); never backward."""
        return await self._db.write(_mark_read, conversation, user_id, seq, now)
