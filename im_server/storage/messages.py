"""Conversations, members and messages.

Seqs are allocated inside the group-commit transaction by bumping ``conversations.max_seq`` once per
conversation per batch, so every conversation's seqs are gap-free and ordered by commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter
from sqlalchemy import Connection, and_, bindparam, case, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from im_schema.content import Content
from im_schema.ids import conversation_kind, direct_peer
from im_schema.models import ConversationSummary, Message, ReadState, format_timestamp

from ._util import insert_ignore, ms_to_datetime
from .engine import Database
from .tables import conversations, members, messages

__all__ = [
    "MemberState",
    "MessageStore",
    "NewMessage",
    "Written",
    "message_json",
]

_content: TypeAdapter[Content] = TypeAdapter(Content)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message waiting for its seq."""

    conversation: str
    sender: int
    client_msg_id: str | None
    content: Content

    def body(self) -> bytes:
        """The content as stored: its JSON."""
        return self.content.__pydantic_serializer__.to_json(self.content)


class Written:
    """A stored message, serialized once: :attr:`json` goes into every frame that carries it."""

    __slots__ = ("_message", "client_msg_id", "conversation", "duplicate", "json", "sender", "seq")

    def __init__(
        self,
        conversation: str,
        seq: int,
        sender: int,
        client_msg_id: str | None,
        json: bytes,
        *,
        duplicate: bool,
    ) -> None:
        self.conversation = conversation
        self.seq = seq
        self.sender = sender
        self.client_msg_id = client_msg_id
        self.json = json
        """The message as JSON, exactly as :class:`~im_schema.models.Message` serializes it."""
        self.duplicate = duplicate
        """``True`` if this send had been stored before (a retry)."""
        self._message: Message | None = None

    @property
    def message(self) -> Message:
        """The message as a model (parsed from :attr:`json` on first use)."""
        if self._message is None:
            self._message = Message.model_validate_json(self.json)
        return self._message

    def again(self) -> Written:
        """The same message, answering a repeated send."""
        return Written(self.conversation, self.seq, self.sender, self.client_msg_id, self.json, duplicate=True)


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's place in a conversation."""

    read_seq: int
    joined_seq: int
    max_seq: int


def message_json(
    conversation: str, seq: int, sender: int, client_msg_id: str | None, sent_at: str, body: bytes | str
) -> bytes:
    """A message's JSON from its stored parts (``body`` is the content's JSON)."""
    return orjson.dumps(
        {
            "conversation": conversation,
            "seq": seq,
            "sender": sender,
            "client_msg_id": client_msg_id,
            "sent_at": sent_at,
            "content": orjson.Fragment(body),
        }
    )


def _written(row: Any, *, duplicate: bool) -> Written:
    json = message_json(
        row.conversation_id, row.seq, row.sender_id, row.client_msg_id, _timestamp(row.created_at), row.body
    )
    return Written(row.conversation_id, row.seq, row.sender_id, row.client_msg_id, json, duplicate=duplicate)


def _timestamp(ms: int) -> str:
    return format_timestamp(ms_to_datetime(ms))


def _message(row: Any) -> Message:
    return Message.model_construct(
        conversation=row.conversation_id,
        seq=row.seq,
        sender=row.sender_id,
        client_msg_id=row.client_msg_id,
        sent_at=ms_to_datetime(row.created_at),
        content=_content.validate_json(row.body),
    )


class MessageStore:
    """Named transactions on conversations and messages."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure_direct(self, conversation: str, user_a: int, user_b: int, *, now: int) -> None:
        """Create a one-to-one conversation and its two members if they do not exist."""
        await self._db.write(_ensure_direct, self._db.dialect, conversation, (user_a, user_b), now)

    async def write_batch(self, items: Sequence[NewMessage], *, now: int) -> list[Written | None]:
        """Store a batch in one transaction, in order.

        Returns one entry per item: the stored message (a duplicate of an earlier send returns the
        earlier message), or ``None`` where the conversation does not exist.
        """
        try:
            # Retries are rare: try without looking for earlier copies, and let the unique constraint on
            # (sender, client_msg_id) catch one. Then the whole transaction is redone with the lookup.
            return await self._db.write(_write_batch, items, now, False)
        except IntegrityError:
            return await self._db.write(_write_batch, items, now, True)

    async def member(self, conversation: str, user_id: int) -> MemberState | None:
        """A member's read and join position, or ``None`` if not a member."""
        return await self._db.read(_member, conversation, user_id)

    async def history(
        self, conversation: str, *, floor: int, after: int | None, before: int | None, limit: int
    ) -> tuple[list[Message], bool, int]:
        """Messages above ``floor`` in a seq range; returns ``(messages, has_more, max_seq)``."""
        return await self._db.read(_history, conversation, floor, after, before, limit)

    async def conversations_since(
        self, user_id: int, *, since: tuple[int, str] | None, limit: int
    ) -> tuple[list[tuple[int, ConversationSummary]], bool]:
        """A user's conversations changed after ``since`` (a ``(ms, id)`` keyset), oldest change first.

        Returns ``[(changed_at_ms, summary)]`` and whether more remain.
        """
        return await self._db.read(_conversations_since, user_id, since, limit)

    async def mark_read(self, conversation: str, user_id: int, seq: int, *, now: int) -> ReadState | None:
        """Move a member's read position forward to ``seq`` (capped at ``max_seq``); never backward."""
        return await self._db.write(_mark_read, conversation, user_id, seq, now)


# Transactions -------------------------------------------------------------------------------------


def _ensure_direct(conn: Connection, dialect: str, conversation: str, users: tuple[int, int], now: int) -> None:
    conn.execute(
        insert_ignore(dialect, conversations).values(
            id=conversation, kind="direct", max_seq=0, created_at=now, last_at=now
        )
    )
    conn.execute(
        insert_ignore(dialect, members),
        [
            {"conversation_id": conversation, "user_id": user, "read_seq": 0, "joined_seq": 0, "updated_at": now}
            for user in users
        ],
    )


def _member(conn: Connection, conversation: str, user_id: int) -> MemberState | None:
    row = conn.execute(
        select(members.c.read_seq, members.c.joined_seq, conversations.c.max_seq)
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
    ).one_or_none()
    return None if row is None else MemberState(row.read_seq, row.joined_seq, row.max_seq)


def _history(
    conn: Connection, conversation: str, floor: int, after: int | None, before: int | None, limit: int
) -> tuple[list[Message], bool, int]:
    seq = messages.c.seq
    query = select(messages).where(messages.c.conversation_id == conversation, seq > floor)
    if before is not None:
        query = query.where(seq < before)
    if after is not None:
        query = query.where(seq > after).order_by(seq).limit(limit + 1)
    else:
        query = query.order_by(seq.desc()).limit(limit + 1)
    rows = list(conn.execute(query).all())
    max_seq = conn.execute(
        select(conversations.c.max_seq).where(conversations.c.id == conversation)
    ).scalar_one_or_none()
    has_more = len(rows) > limit
    rows = rows[:limit]
    if after is None:
        rows.reverse()
    return [_message(row) for row in rows], has_more, max_seq or 0


def _conversations_since(
    conn: Connection, user_id: int, since: tuple[int, str] | None, limit: int
) -> tuple[list[tuple[int, ConversationSummary]], bool]:
    changed = case(
        (conversations.c.last_at > members.c.updated_at, conversations.c.last_at),
        else_=members.c.updated_at,
    ).label("changed")
    last = messages.alias("last")
    query = (
        select(
            conversations.c.id,
            conversations.c.kind,
            conversations.c.max_seq,
            members.c.read_seq,
            members.c.joined_seq,
            changed,
            last.c.conversation_id,
            last.c.seq,
            last.c.sender_id,
            last.c.client_msg_id,
            last.c.body,
            last.c.created_at,
        )
        .select_from(members)
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .outerjoin(last, and_(last.c.conversation_id == conversations.c.id, last.c.seq == conversations.c.max_seq))
        .where(members.c.user_id == user_id)
        .order_by(changed, conversations.c.id)
        .limit(limit + 1)
    )
    if since is not None:
        ms, after_id = since
        query = query.where(or_(changed > ms, and_(changed == ms, conversations.c.id > after_id)))
    rows = conn.execute(query).all()
    has_more = len(rows) > limit
    result = []
    for row in rows[:limit]:
        last_message = _message(row) if row.seq is not None and row.seq > row.joined_seq else None
        read_seq = max(row.read_seq, row.joined_seq)
        summary = ConversationSummary.model_construct(
            id=row.id,
            kind=conversation_kind(row.id),
            peer=direct_peer(row.id, user_id) if row.kind == "direct" else None,
            max_seq=row.max_seq,
            read_seq=read_seq,
            joined_seq=row.joined_seq,
            unread=max(0, row.max_seq - read_seq),
            last_message=last_message,
            updated_at=ms_to_datetime(row.changed),
        )
        result.append((row.changed, summary))
    return result, has_more


def _mark_read(conn: Connection, conversation: str, user_id: int, seq: int, now: int) -> ReadState | None:
    max_seq = conn.execute(
        select(conversations.c.max_seq).where(conversations.c.id == conversation)
    ).scalar_one_or_none()
    if max_seq is None:
        return None
    target = min(seq, max_seq)
    conn.execute(
        update(members)
        .where(
            members.c.conversation_id == conversation,
            members.c.user_id == user_id,
            members.c.read_seq < target,
        )
        .values(read_seq=target, updated_at=now)
    )
    state = conn.execute(
        select(members.c.read_seq, members.c.joined_seq).where(
            members.c.conversation_id == conversation, members.c.user_id == user_id
        )
    ).one_or_none()
    if state is None:
        return None
    effective = max(state.read_seq, state.joined_seq)
    return ReadState(conversation=conversation, read_seq=effective, unread=max(0, max_seq - effective))


# The statements of the hot path, built once (building them costs more than running them).
_BUMP_ONE = (
    update(conversations)
    .where(conversations.c.id == bindparam("c"))
    .values(max_seq=conversations.c.max_seq + bindparam("n"), last_at=bindparam("now"))
    .returning(conversations.c.id, conversations.c.max_seq)
)
_INSERT_MESSAGES = insert(messages)
_READ_OWN = (
    update(members)
    .where(
        members.c.conversation_id == bindparam("c"),
        members.c.user_id == bindparam("u"),
        members.c.read_seq < bindparam("s"),
    )
    .values(read_seq=bindparam("s"), updated_at=bindparam("now"))
)


def _write_batch(
    conn: Connection, items: Sequence[NewMessage], now: int, look_for_duplicates: bool
) -> list[Written | None]:
    results: list[Written | None] = [None] * len(items)

    # 1. Sends that were stored before (a retry after a lost answer) get the stored message back.
    keys = {(item.sender, item.client_msg_id) for item in items if item.client_msg_id is not None}
    stored: dict[tuple[int, str | None], Written] = {}
    if keys and look_for_duplicates:
        rows = conn.execute(
            select(messages).where(tuple_(messages.c.sender_id, messages.c.client_msg_id).in_(list(keys)))
        )
        for row in rows:
            stored[(row.sender_id, row.client_msg_id)] = _written(row, duplicate=True)

    # 2. Count the new messages of each conversation; a key repeated inside the batch is stored once.
    fresh: list[int] = []
    first_of: dict[tuple[int, str | None], int] = {}
    repeats: list[tuple[int, int]] = []
    counts: dict[str, int] = {}
    for index, item in enumerate(items):
        key = (item.sender, item.client_msg_id)
        if item.client_msg_id is not None:
            if key in stored:
                results[index] = stored[key]
                continue
            if key in first_of:
                repeats.append((index, first_of[key]))
                continue
            first_of[key] = index
        fresh.append(index)
        counts[item.conversation] = counts.get(item.conversation, 0) + 1
    if not fresh:
        return results

    # 3. Allocate seqs: one UPDATE for every conversation of the batch.
    if len(counts) == 1:
        [(only, count)] = counts.items()
        bumped = conn.execute(_BUMP_ONE, {"c": only, "n": count, "now": now})
    else:
        bumped = conn.execute(
            update(conversations)
            .where(conversations.c.id.in_(list(counts)))
            .values(max_seq=conversations.c.max_seq + case(counts, value=conversations.c.id), last_at=now)
            .returning(conversations.c.id, conversations.c.max_seq)
        )
    next_seq = {row.id: row.max_seq - counts[row.id] + 1 for row in bumped}

    # 4. Insert, and move each sender's read position past their own message.
    rows_out: list[dict[str, Any]] = []
    read_up_to: dict[tuple[str, int], int] = {}
    sent_at = _timestamp(now)
    for index in fresh:
        item = items[index]
        if item.conversation not in next_seq:
            continue
        seq = next_seq[item.conversation]
        next_seq[item.conversation] = seq + 1
        body = item.body()
        rows_out.append(
            {
                "conversation_id": item.conversation,
                "seq": seq,
                "sender_id": item.sender,
                "client_msg_id": item.client_msg_id,
                "body": body.decode(),
                "created_at": now,
            }
        )
        read_up_to[(item.conversation, item.sender)] = seq
        json = message_json(item.conversation, seq, item.sender, item.client_msg_id, sent_at, body)
        results[index] = Written(item.conversation, seq, item.sender, item.client_msg_id, json, duplicate=False)
    if rows_out:
        conn.execute(_INSERT_MESSAGES, rows_out)
        conn.execute(
            _READ_OWN, [{"c": conv, "u": user, "s": seq, "now": now} for (conv, user), seq in read_up_to.items()]
        )
    for index, first in repeats:
        written = results[first]
        results[index] = None if written is None else written.again()
    return results
