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
from sqlalchemy import Connection, and_, bindparam, case, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from im_schema.content import Content, RecalledContent, SystemContent, SystemEvent, TextContent
from im_schema.errors import ErrorCode
from im_schema.ids import conversation_kind, direct_peer, direct_users
from im_schema.models import ConversationSummary, Message, ReadState, format_timestamp

from ..errors import Refusal
from ._util import insert_ignore, ms_to_datetime
from .engine import Database
from .files import insert_shares, share_rows
from .tables import conversations, groups, members, mentions, messages

__all__ = [
    "UNCOUNTED_KINDS",
    "LifecycleError",
    "MemberState",
    "MessageStore",
    "NewMessage",
    "Refused",
    "Written",
    "append_system",
    "message_json",
    "preview_of",
]

Refused = Refusal
"""The old name of :class:`im_server.errors.Refusal`, returned for a send the commit turned down."""
LifecycleError = Refusal
"""The old name of :class:`im_server.errors.Refusal`, raised when a recall or an edit is not allowed."""

_content: TypeAdapter[Content] = TypeAdapter(Content)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message waiting for its seq."""

    conversation: str
    sender: int
    client_msg_id: str | None
    content: Content
    reply_to: int | None = None
    mentions: tuple[int, ...] = ()
    mention_all: bool = False

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
class MemberState:
    """One member's place in a conversation."""

    read_seq: int
    joined_seq: int
    max_seq: int
    left_seq: int | None = None
    """Set once the member left: history ends there."""


UNCOUNTED_KINDS = ("system", "recalled")
"""Kinds that never count as unread."""
REPLY_PREVIEW_LEN = 100


def message_json(
    conversation: str,
    seq: int,
    sender: int,
    client_msg_id: str | None,
    sent_at: str,
    body: bytes | str,
    meta: dict[str, Any] | None = None,
) -> bytes:
    """A message's JSON from its stored parts (``body`` is the content's JSON, ``meta`` the stored extras)."""
    fields: dict[str, Any] = {
        "conversation": conversation,
        "seq": seq,
        "sender": sender,
        "client_msg_id": client_msg_id,
        "sent_at": sent_at,
        "content": orjson.Fragment(body),
    }
    if meta:
        if "reply" in meta:
            fields["reply_to"] = meta["reply"]
        if meta.get("mentions"):
            fields["mentions"] = meta["mentions"]
        if meta.get("all"):
            fields["mention_all"] = True
        if meta.get("edited_at"):
            fields["edited_at"] = _timestamp(meta["edited_at"])
    return orjson.dumps(fields)


def _meta(row: Any) -> dict[str, Any] | None:
    raw = getattr(row, "meta", None)
    return orjson.loads(raw) if raw else None


def _written(row: Any, *, duplicate: bool) -> Written:
    json = message_json(
        row.conversation_id,
        row.seq,
        row.sender_id,
        row.client_msg_id,
        _timestamp(row.created_at),
        row.body,
        _meta(row),
    )
    return Written(row.conversation_id, row.seq, row.sender_id, row.client_msg_id, json, duplicate=duplicate)


def _timestamp(ms: int) -> str:
    return format_timestamp(ms_to_datetime(ms))


def _message(row: Any) -> Message:
    return _written(row, duplicate=False).message


def preview_of(kind: str, body: str | bytes) -> str:
    """The quote shown in a reply: the start of the text, or the kind of media."""
    if kind == "text":
        text = str(orjson.loads(body).get("text", ""))
        return text if len(text) <= REPLY_PREVIEW_LEN else text[: REPLY_PREVIEW_LEN - 1] + "…"
    if kind == "recalled":
        return "[recalled]"
    return f"[{kind}]"


def append_system(
    conn: Connection,
    conversation: str,
    actor: int,
    event: str,
    data: dict[str, Any],
    now: int,
    *,
    roster: bool = False,
) -> Written:
    """Append a system message (with its own seq); with ``roster``, also bump the membership version."""
    values: dict[str, Any] = {"max_seq": conversations.c.max_seq + 1, "last_at": now}
    if roster:
        values["members_version"] = conversations.c.members_version + 1
    row = conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation)
        .values(**values)
        .returning(conversations.c.max_seq, conversations.c.members_version)
    ).one()
    body = SystemContent(event=event, actor=actor, data=data).model_dump_json().encode()
    conn.execute(
        insert(messages).values(
            conversation_id=conversation,
            seq=row.max_seq,
            sender_id=actor,
            client_msg_id=None,
            body=body.decode(),
            created_at=now,
            kind="system",
        )
    )
    json = message_json(conversation, row.max_seq, actor, None, _timestamp(now), body)
    return Written(conversation, row.max_seq, actor, None, json, duplicate=False, members_version=row.members_version)


class MessageStore:
    """Named transactions on conversations and messages."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        """The database this store writes to."""
        return self._db

    async def ensure_direct(self, conversation: str, user_a: int, user_b: int, *, now: int) -> None:
        """Create a one-to-one conversation and its two members if they do not exist."""
        await self._db.write(_ensure_direct, self._db.dialect, conversation, (user_a, user_b), now)

    async def write_batch(self, items: Sequence[NewMessage], *, now: int) -> list[Written | Refusal | None]:
        """Store a batch in one transaction, in order.

        Returns one entry per item: the stored message (a duplicate of an earlier send returns the
        earlier message), a :class:`~im_server.errors.Refusal` for a group send its sender may no longer
        make, or ``None`` where the conversation does not exist.
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

    async def history_json(
        self,
        conversation: str,
        *,
        floor: int,
        ceiling: int | None = None,
        after: int | None,
        before: int | None,
        limit: int,
    ) -> tuple[list[bytes], bool, int]:
        """As :meth:`history`, each message as its JSON (for a page that is sent on as it is)."""
        return await self._db.read(_history_json, conversation, floor, ceiling, after, before, limit)

    async def conversations_since(
        self, user_id: int, *, since: tuple[int, str] | None, limit: int
    ) -> tuple[list[tuple[int, ConversationSummary]], bool]:
        """A user's conversations changed after ``since`` (a ``(ms, id)`` keyset), oldest change first.

        Returns ``[(changed_at_ms, summary)]`` and whether more remain.
        """
        return await self._db.read(_conversations_since, user_id, since, limit)

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

    async def receipts(self, conversation: str, seq: int) -> tuple[int, list[int], list[int]] | None:
        """``(sender, read, unread)`` for a message: the members who could see it, split by read position."""
        return await self._db.read(_receipts, conversation, seq)

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
    rows, has_more, max_seq = _history_rows(conn, conversation, floor, ceiling, after, before, limit)
    return [_message(row) for row in rows], has_more, max_seq


def _history_json(
    conn: Connection,
    conversation: str,
    floor: int,
    ceiling: int | None,
    after: int | None,
    before: int | None,
    limit: int,
) -> tuple[list[bytes], bool, int]:
    rows, has_more, max_seq = _history_rows(conn, conversation, floor, ceiling, after, before, limit)
    return [_written(row, duplicate=False).json for row in rows], has_more, max_seq


def _history_rows(
    conn: Connection,
    conversation: str,
    floor: int,
    ceiling: int | None,
    after: int | None,
    before: int | None,
    limit: int,
) -> tuple[list[Any], bool, int]:
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
    return rows, has_more, max_seq


def _effective_read() -> Any:
    return case((members.c.read_seq > members.c.joined_seq, members.c.read_seq), else_=members.c.joined_seq)


def _unread_count(conversation: Any, user_id: int, read: Any, ceiling: Any) -> Any:
    """Messages of others above ``read`` (and up to ``ceiling``) that count: not system, not recalled."""
    counted = messages.alias("counted")
    return (
        select(func.count())
        .select_from(counted)
        .where(
            counted.c.conversation_id == conversation,
            counted.c.seq > read,
            counted.c.seq <= ceiling,
            counted.c.kind.not_in(UNCOUNTED_KINDS),
            counted.c.sender_id != user_id,
        )
        .scalar_subquery()
    )


def _conversations_since(
    conn: Connection, user_id: int, since: tuple[int, str] | None, limit: int
) -> tuple[list[tuple[int, ConversationSummary]], bool]:
    peer = members.alias("peer")
    last_at = conversations.c.last_at
    mine = members.c.updated_at
    theirs = func.coalesce(peer.c.updated_at, 0)
    # The latest of: a new message, my read position, my peer's (read receipts in direct conversations).
    changed = case((and_(last_at >= mine, last_at >= theirs), last_at), (mine >= theirs, mine), else_=theirs).label(
        "changed"
    )
    last = messages.alias("last")
    ceiling = case((members.c.left_seq.is_(None), conversations.c.max_seq), else_=members.c.left_seq)
    read = _effective_read()
    mentioned = (
        select(mentions.c.seq)
        .where(
            mentions.c.conversation_id == conversations.c.id,
            mentions.c.seq > read,
            mentions.c.seq <= ceiling,
            mentions.c.user_id.in_([user_id, 0]),
        )
        .exists()
    )
    query = (
        select(
            conversations.c.id,
            conversations.c.kind,
            ceiling.label("visible_max"),
            members.c.read_seq,
            members.c.joined_seq,
            members.c.left_seq,
            changed,
            _unread_count(conversations.c.id, user_id, read, ceiling).label("unread"),
            mentioned.label("mentioned"),
            peer.c.read_seq.label("peer_read_seq"),
            last.c.conversation_id,
            last.c.seq,
            last.c.sender_id,
            last.c.client_msg_id,
            last.c.body,
            last.c.created_at,
            last.c.meta,
        )
        .select_from(members)
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .outerjoin(
            peer,
            and_(
                peer.c.conversation_id == conversations.c.id,
                peer.c.user_id != user_id,
                conversations.c.kind == "direct",
            ),
        )
        .outerjoin(last, and_(last.c.conversation_id == conversations.c.id, last.c.seq == ceiling))
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
        summary = ConversationSummary.model_construct(
            id=row.id,
            kind=conversation_kind(row.id),
            peer=direct_peer(row.id, user_id) if row.kind == "direct" else None,
            max_seq=row.visible_max,
            read_seq=max(row.read_seq, row.joined_seq),
            joined_seq=row.joined_seq,
            unread=row.unread,
            last_message=last_message,
            updated_at=ms_to_datetime(row.changed),
            left=row.left_seq is not None,
            mentioned=bool(row.mentioned),
            peer_read_seq=row.peer_read_seq,
        )
        result.append((row.changed, summary))
    return result, has_more


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
) -> list[Written | Refusal | None]:
    results: list[Written | Refusal | None] = [None] * len(items)
    refusals, roles = _group_refusals(conn, items, now)
    item_refusals, replies = _replies_and_mentions(conn, items, roles)

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
        refusal = refusals.get((item.conversation, item.sender)) or item_refusals.get(index)
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
    mention_rows: list[dict[str, Any]] = []
    read_up_to: dict[tuple[str, int], int] = {}
    sent_at = _timestamp(now)
    for index in fresh:
        item = items[index]
        if item.conversation not in next_seq:
            continue
        seq = next_seq[item.conversation]
        next_seq[item.conversation] = seq + 1
        body = item.body()
        meta: dict[str, Any] = {}
        if index in replies:
            meta["reply"] = replies[index]
        if item.mentions:
            meta["mentions"] = sorted(set(item.mentions))
            mention_rows.extend(
                {"conversation_id": item.conversation, "seq": seq, "user_id": user} for user in meta["mentions"]
            )
        if item.mention_all:
            meta["all"] = True
            mention_rows.append({"conversation_id": item.conversation, "seq": seq, "user_id": 0})
        rows_out.append(
            {
                "conversation_id": item.conversation,
                "seq": seq,
                "sender_id": item.sender,
                "client_msg_id": item.client_msg_id,
                "body": body.decode(),
                "created_at": now,
                "kind": item.content.kind,
                "reply_to": item.reply_to if index in replies else None,
                "meta": orjson.dumps(meta).decode() if meta else None,
            }
        )
        read_up_to[(item.conversation, item.sender)] = seq
        shares.extend(share_rows(item.content, item.conversation, seq))
        json = message_json(item.conversation, seq, item.sender, item.client_msg_id, sent_at, body, meta)
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
        if mention_rows:
            conn.execute(insert(mentions), mention_rows)
    for index, first in repeats:
        written = results[first]
        results[index] = written.again() if isinstance(written, Written) else written
    return results


def _group_refusals(
    conn: Connection, items: Sequence[NewMessage], now: int
) -> tuple[dict[tuple[str, int], Refusal], dict[tuple[str, int], Any]]:
    """Group sends whose sender is not an active member, is muted, or whose group is dissolved; also the
    senders' membership rows (role, joined_seq) for the other checks.

    Checked inside the commit so that a kick or a mute on another node cannot race a send.
    """
    pairs = {(item.conversation, item.sender) for item in items if item.conversation.startswith("g:")}
    if not pairs:
        return {}, {}
    conversation_ids = {conversation for conversation, _ in pairs}
    rows = conn.execute(
        select(
            members.c.conversation_id,
            members.c.user_id,
            members.c.role,
            members.c.muted_until,
            members.c.left_seq,
            members.c.joined_seq,
        ).where(members.c.conversation_id.in_(conversation_ids), members.c.user_id.in_({user for _, user in pairs}))
    ).all()
    roles = {(row.conversation_id, row.user_id): row for row in rows}
    group_rows = conn.execute(
        select(groups.c.id, groups.c.muted_all, groups.c.dissolved).where(
            groups.c.id.in_([int(conversation[2:]) for conversation in conversation_ids])
        )
    ).all()
    state = {f"g:{row.id}": row for row in group_rows}
    refusals: dict[tuple[str, int], Refusal] = {}
    for pair in pairs:
        group = state.get(pair[0])
        member = roles.get(pair)
        if group is None:
            continue  # no such conversation: the seq allocation reports it
        if group.dissolved:
            refusals[pair] = Refusal(ErrorCode.GROUP_DISSOLVED, "the group was dissolved")
        elif member is None or member.left_seq is not None:
            refusals[pair] = Refusal(ErrorCode.NOT_A_MEMBER, "you are not a member of this group")
        elif member.muted_until is not None and member.muted_until > now:
            refusals[pair] = Refusal(ErrorCode.MUTED, "you are muted in this group")
        elif group.muted_all and member.role == "member":
            refusals[pair] = Refusal(ErrorCode.MUTED, "only the owner and admins may speak while the group is muted")
    return refusals, roles


def _replies_and_mentions(
    conn: Connection, items: Sequence[NewMessage], roles: dict[tuple[str, int], Any]
) -> tuple[dict[int, Refusal], dict[int, dict[str, Any]]]:
    """Check replies (the message exists and the sender may see it) and mentions (of members only;
    ``@all`` by group owners and admins); returns refusals and reply previews, by item index."""
    refusals: dict[int, Refusal] = {}
    previews: dict[int, dict[str, Any]] = {}
    wanted = {(item.conversation, item.reply_to) for item in items if item.reply_to is not None}
    originals: dict[tuple[str, int], Any] = {}
    if wanted:
        rows = conn.execute(
            select(
                messages.c.conversation_id, messages.c.seq, messages.c.sender_id, messages.c.kind, messages.c.body
            ).where(tuple_(messages.c.conversation_id, messages.c.seq).in_(list(wanted)))
        ).all()
        originals = {(row.conversation_id, row.seq): row for row in rows}
    mentioned_groups = {item.conversation for item in items if item.mentions and item.conversation.startswith("g:")}
    present: set[tuple[str, int]] = set()
    if mentioned_groups:
        users = {user for item in items for user in item.mentions}
        member_rows = conn.execute(
            select(members.c.conversation_id, members.c.user_id).where(
                members.c.conversation_id.in_(mentioned_groups),
                members.c.user_id.in_(users),
                members.c.left_seq.is_(None),
            )
        ).all()
        present = {(row.conversation_id, row.user_id) for row in member_rows}
    for index, item in enumerate(items):
        member = roles.get((item.conversation, item.sender))
        if item.reply_to is not None:
            original = originals.get((item.conversation, item.reply_to))
            floor = member.joined_seq if member is not None else 0
            if original is None or original.kind in UNCOUNTED_KINDS or original.seq <= floor:
                refusals[index] = Refusal(ErrorCode.BAD_REQUEST, "there is no such message to reply to")
                continue
            previews[index] = {
                "seq": original.seq,
                "sender": original.sender_id,
                "preview": preview_of(original.kind, original.body),
            }
        if item.mention_all and (member is None or member.role not in ("owner", "admin")):
            refusals[index] = Refusal(ErrorCode.FORBIDDEN, "only group owners and admins may mention everyone")
            continue
        if item.mentions:
            if item.conversation.startswith("g:"):
                strangers = [user for user in item.mentions if (item.conversation, user) not in present]
            else:
                strangers = [user for user in item.mentions if user not in direct_users(item.conversation)]
            if strangers:
                refusals[index] = Refusal(ErrorCode.BAD_REQUEST, f"not in this conversation: {sorted(set(strangers))}")
    return refusals, previews
