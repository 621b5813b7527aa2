"""Conversations as their members see them: creation of direct ones, membership positions, history,
the changed-conversations feed and unread counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select

from im_schema.ids import conversation_kind, direct_peer
from im_schema.limits import RECENT_PAGE_BUDGET
from im_schema.models import ConversationSummary, Message

from ._util import insert_ignore, ms_to_datetime
from .engine import Database
from .message_rows import UNCOUNTED_KINDS, _message, _written
from .tables import conversations, members, mentions, messages

__all__ = [
    "ConversationTransactions",
    "MemberState",
]


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's place in a conversation."""

    read_seq: int
    joined_seq: int
    max_seq: int
    left_seq: int | None = None
    """Set once the member left: history ends there."""


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


_NO_BOUND = 2**62
"""Stands for "no ceiling" and "no ``before``" in the prebuilt history statements (seqs never get near)."""

# The catch-up read, built once (building a statement costs more than running it on SQLite).
_MEMBER_AND_MAX = (
    select(members.c.joined_seq, members.c.left_seq, conversations.c.max_seq)
    .join(conversations, conversations.c.id == members.c.conversation_id)
    .where(members.c.conversation_id == bindparam("c"), members.c.user_id == bindparam("u"))
)
_RANGE = select(messages).where(
    messages.c.conversation_id == bindparam("c"),
    messages.c.seq > bindparam("floor"),
    messages.c.seq <= bindparam("ceiling"),
    messages.c.seq < bindparam("before"),
)
_FIRST_AFTER = _RANGE.where(messages.c.seq > bindparam("after")).order_by(messages.c.seq).limit(bindparam("n"))
_LAST_BEFORE = _RANGE.order_by(messages.c.seq.desc()).limit(bindparam("n"))


def _member_history_json(
    conn: Connection,
    conversation: str,
    user_id: int,
    after: int | None,
    before: int | None,
    limit: int,
) -> tuple[list[bytes], bool, int] | None:
    """What :func:`_history_json` answers for a member's own floor and ceiling, in one transaction; ``None``
    if ``user_id`` is not a member.

    ``max_seq`` is read before the messages: a message committed in between (under READ COMMITTED) then
    shows up as a row above ``max_seq``, which a client handles, instead of a ``max_seq`` above the last
    row returned, which tells a client that the seqs in between do not exist for it.
    """
    member = conn.execute(_MEMBER_AND_MAX, {"c": conversation, "u": user_id}).one_or_none()
    if member is None:
        return None
    ceiling = member.left_seq
    values = {
        "c": conversation,
        "floor": member.joined_seq,
        "ceiling": _NO_BOUND if ceiling is None else ceiling,
        "before": _NO_BOUND if before is None else before,
        "n": limit + 1,
    }
    if after is not None:
        rows = list(conn.execute(_FIRST_AFTER, {**values, "after": after}).all())
    else:
        rows = list(conn.execute(_LAST_BEFORE, values).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if after is None:
        rows.reverse()
    max_seq = member.max_seq or 0
    if ceiling is not None:
        max_seq = min(max_seq, ceiling)
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


def _unread_count(conversation: Any, user_id: Any, read: Any, ceiling: Any) -> Any:
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


def _build_conversations_since(*, keyset: bool) -> Any:
    """The changed-conversations statement, with binds ``u`` (the user), ``n`` (rows to read) and, with
    ``keyset``, ``ms`` and ``after_id`` (where the previous page ended)."""
    user_id: Any = bindparam("u")
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
            or_(mentions.c.user_id == user_id, mentions.c.user_id == 0),
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
        .limit(bindparam("n"))
    )
    if keyset:
        ms: Any = bindparam("ms")
        query = query.where(or_(changed > ms, and_(changed == ms, conversations.c.id > bindparam("after_id"))))
    return query


# Built once: building this statement (aliases, subqueries) took several times longer than running it on
# SQLite, and a reconnect storm runs it once per device.
_CHANGED_SINCE = _build_conversations_since(keyset=True)
_CHANGED_ALL = _build_conversations_since(keyset=False)


def _conversations_since(
    conn: Connection, user_id: int, since: tuple[int, str] | None, limit: int, recent: int = 0
) -> tuple[list[tuple[int, ConversationSummary]], bool]:
    values: dict[str, object]
    if since is None:
        query, values = _CHANGED_ALL, {"u": user_id, "n": limit + 1}
    else:
        query, values = _CHANGED_SINCE, {"u": user_id, "n": limit + 1, "ms": since[0], "after_id": since[1]}
    rows = conn.execute(query, values).all()
    has_more = len(rows) > limit
    result = []
    budget = RECENT_PAGE_BUDGET
    for row in rows[:limit]:
        last_message = _message(row) if row.seq is not None and row.seq > row.joined_seq else None
        recent_messages: list[Message] = []
        recent_after: int | None = None
        if recent and budget >= recent:
            # The same floor and ceiling as history: what this member may see, nothing past what the
            # summary reports (a message committed since this row was read is left to its push).
            recent_after = max(row.joined_seq, row.visible_max - recent)
            values = {"c": row.id, "floor": recent_after, "ceiling": row.visible_max, "before": _NO_BOUND}
            recent_messages = [_message(r) for r in conn.execute(_FIRST_AFTER, {**values, "after": 0, "n": recent})]
            budget -= recent
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
            recent=recent_messages,
            recent_after=recent_after,
        )
        result.append((row.changed, summary))
    return result, has_more


class ConversationTransactions:
    """The :class:`~.messages.MessageStore` methods of conversations as their members see them (direct ones made
    on first use, membership positions, history, the changed-conversations feed).

    Each runs one transaction of this module: a new operation adds its transaction and its method here."""

    _db: Database

    async def ensure_direct(self, conversation: str, user_a: int, user_b: int, *, now: int) -> None:
        """Create a one-to-one conversation and its two members if they do not exist."""
        await self._db.write(_ensure_direct, self._db.dialect, conversation, (user_a, user_b), now)

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

    async def member_history_json(
        self, conversation: str, user_id: int, *, after: int | None, before: int | None, limit: int
    ) -> tuple[list[bytes], bool, int] | None:
        """:meth:`history_json` within the member's own floor and ceiling, read in one transaction with
        the membership; ``None`` if ``user_id`` is not a member."""
        return await self._db.read(_member_history_json, conversation, user_id, after, before, limit)

    async def conversations_since(
        self, user_id: int, *, since: tuple[int, str] | None, limit: int, recent: int = 0
    ) -> tuple[list[tuple[int, ConversationSummary]], bool]:
        """A user's conversations changed after ``since`` (a ``(ms, id)`` keyset), oldest change first,
        each with its last ``recent`` seqs of messages while the page's budget lasts.

        Returns ``[(changed_at_ms, summary)]`` and whether more remain.
        """
        return await self._db.read(_conversations_since, user_id, since, limit, recent)
