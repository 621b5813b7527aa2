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
from .files import insert_shares, share_rows
from .tables import conversations, groups, members, messages

__all__ = [
    "MemberState",
    "MessageStore",
    "NewMessage",
    "Refused",
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

    __slots__ = ("_message", "client_msg_id", "conversation", "duplicate", "json", "members_version", "sender", "seq")

    def __init__(
        self,
        conversation: str,
        seq: int,
        sender: int,
        client_msg_id: str | None,
        json: bytes,
        *,
        duplicate: bool,
        members_version: int = 0,
    ) -> None:
        self.conversation = conversation
        self.seq = seq
        self.sender = sender
        self.client_msg_id = client_msg_id
        self.json = json
        """The message as JSON, exactly as :class:`~im_schema.models.Message` serializes it."""
        self.duplicate = duplicate
        """``True`` if this send had been stored before (a retry)."""
        self.members_version = members_version
        """The conversation's membership version when the message was committed."""
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
class Refused:
    """A send the commit transaction turned down (membership changed since the send was checked)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's place in a conversation."""

    read_seq: int
    joined_seq: int
    max_seq: int
    left_seq: int | None = None
    """Set once the member left: history ends there."""


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

    async def write_batch(self, items: Sequence[NewMessage], *, now: int) -> list[Written | Refused | None]:
        """Store a batch in one transaction, in order.

        Returns one entry per item: the stored message (a duplicate of an earlier send returns the
        earlier message), :class:`Refused` for a group send its sender may no longer make, or ``None`` where
        the conversation does not exist.
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
        self,
        conversation: str,
        *,
        floor: int,
        ceiling: int | None = None,
        after: int | None,
        before: int | None,
        limit: int,
    ) -> tuple[list[Message], bool, int]:
        """Messages above ``floor`` (and up to ``ceiling``) in a seq range; returns
        ``(messages, has_more, max_seq)`` where ``max_seq`` is capped at the ceiling."""
        return await self._db.read(_history, conversation, floor, ceiling, after, before, limit)

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
        select(members.c.read_seq, members.c.joined_seq, members.c.left_seq, conversations.c.max_seq)
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
    ).one_or_none()
    return None if row is None else MemberState(row.read_seq, row.joined_seq, row.max_seq, row.left_seq)


def _history(
    conn: Connection,
    conversation: str,
    floor: int,
    ceiling: int | None,
    after: int | None,
    before: int | None,
    limit: int,
) -> tuple[list[Message], bool, int]:
    seq = messages.c.seq
    query = select(messages).where(messages.c.conversation_id == conversation, seq > floor)
    if ceiling is not None:
        query = query.where(seq <= ceiling)
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
    max_seq = max_seq or 0
    if ceiling is not None:
        max_seq = min(max_seq, ceiling)
    return [_message(row) for row in rows], has_more, max_seq


def _conversations_since(
    conn: Connection, user_id: int, since: tuple[int, str] | None, limit: int
) -> tuple[list[tuple[int, ConversationSummary]], bool]:
    changed = case(
        (conversations.c.last_at > members.c.updated_at, conversations.c.last_at),
        else_=members.c.updated_at,
    ).label("changed")
    last = messages.alias("last")
    visible_max = case((members.c.left_seq.is_(None), conversations.c.max_seq), else_=members.c.left_seq).label(
        "visible_max"
    )
    query = (
        select(
            conversations.c.id,
            conversations.c.kind,
            visible_max,
            members.c.read_seq,
            members.c.joined_seq,
            members.c.left_seq,
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
        .outerjoin(last, and_(last.c.conversation_id == conversations.c.id, last.c.seq == visible_max))
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
            max_seq=row.visible_max,
            read_seq=read_seq,
            joined_seq=row.joined_seq,
            unread=max(0, row.visible_max - read_seq),
            last_message=last_message,
            updated_at=ms_to_datetime(row.changed),
            left=row.left_seq is not None,
        )
        result.append((row.changed, summary))
    return result, has_more


def _mark_read(conn: Connection, conversation: str, user_id: int, seq: int, now: int) -> ReadState | None:
    max_seq = conn.execute(
        select(conversations.c.max_seq).where(conversations.c.id == conversation)
    ).scalar_one_or_none()
    if max_seq is None:
        return None
    left_seq = conn.execute(
        select(members.c.left_seq).where(members.c.conversation_id == conversation, members.c.user_id == user_id)
    ).scalar_one_or_none()
    if left_seq is not None:
        max_seq = min(max_seq, left_seq)
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
    .returning(conversations.c.id, conversations.c.max_seq, conversations.c.members_version)
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
) -> list[Written | Refused | None]:
    results: list[Written | Refused | None] = [None] * len(items)
    refusals = _group_refusals(conn, items, now)

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
        refusal = refusals.get((item.conversation, item.sender))
        if refusal is not None:
            results[index] = refusal
            continue
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
            .returning(conversations.c.id, conversations.c.max_seq, conversations.c.members_version)
        )
    next_seq: dict[str, int] = {}
    versions: dict[str, int] = {}
    for row in bumped:
        next_seq[row.id] = row.max_seq - counts[row.id] + 1
        versions[row.id] = row.members_version

    # 4. Insert, and move each sender's read position past their own message.
    rows_out: list[dict[str, Any]] = []
    shares: list[dict[str, Any]] = []
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
        shares.extend(share_rows(item.content, item.conversation, seq))
        json = message_json(item.conversation, seq, item.sender, item.client_msg_id, sent_at, body)
        results[index] = Written(
            item.conversation,
            seq,
            item.sender,
            item.client_msg_id,
            json,
            duplicate=False,
            members_version=versions[item.conversation],
        )
    if rows_out:
        conn.execute(_INSERT_MESSAGES, rows_out)
        conn.execute(
            _READ_OWN, [{"c": conv, "u": user, "s": seq, "now": now} for (conv, user), seq in read_up_to.items()]
        )
        if shares:
            insert_shares(conn, shares)  # who may download the blobs these messages carry
    for index, first in repeats:
        written = results[first]
        results[index] = written.again() if isinstance(written, Written) else written
    return results


def _group_refusals(conn: Connection, items: Sequence[NewMessage], now: int) -> dict[tuple[str, int], Refused]:
    """Group sends whose sender is not an active member, is muted, or whose group is dissolved.

    Checked inside the commit so that a kick or a mute on another node cannot race a send.
    """
    pairs = {(item.conversation, item.sender) for item in items if item.conversation.startswith("g:")}
    if not pairs:
        return {}
    conversation_ids = {conversation for conversation, _ in pairs}
    rows = conn.execute(
        select(
            members.c.conversation_id, members.c.user_id, members.c.role, members.c.muted_until, members.c.left_seq
        ).where(members.c.conversation_id.in_(conversation_ids), members.c.user_id.in_({user for _, user in pairs}))
    ).all()
    roles = {(row.conversation_id, row.user_id): row for row in rows}
    group_rows = conn.execute(
        select(groups.c.id, groups.c.muted_all, groups.c.dissolved).where(
            groups.c.id.in_([int(conversation[2:]) for conversation in conversation_ids])
        )
    ).all()
    state = {f"g:{row.id}": row for row in group_rows}
    refusals: dict[tuple[str, int], Refused] = {}
    for pair in pairs:
        group = state.get(pair[0])
        member = roles.get(pair)
        if group is None:
            continue  # no such conversation: the seq allocation reports it
        if group.dissolved:
            refusals[pair] = Refused("group_dissolved", "the group was dissolved")
        elif member is None or member.left_seq is not None:
            refusals[pair] = Refused("not_a_member", "you are not a member of this group")
        elif member.muted_until is not None and member.muted_until > now:
            refusals[pair] = Refused("muted", "you are muted in this group")
        elif group.muted_all and member.role == "member":
            refusals[pair] = Refused("muted", "only the owner and admins may speak while the group is muted")
    return refusals
