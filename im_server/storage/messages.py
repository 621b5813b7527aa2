"""Messages: the write path (a batch of sends, in one transaction) and :class:`MessageStore`, the facade
over every message transaction. The other transactions, each with the store method that runs it, live by
concern: reads in :mod:`.conversations`, read positions in :mod:`.receipts`, recall and edit in
:mod:`.revisions`.

Seqs are allocated inside the group-commit transaction by bumping ``conversations.max_seq`` once per
conversation per batch, so every conversation's seqs are gap-free and ordered by commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, case, insert, select, tuple_, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from im_schema.content import Content

from ..errors import Refusal
from .conversations import ConversationTransactions, MemberState
from .engine import Database
from .files import insert_shares, share_rows
from .message_rows import UNCOUNTED_KINDS, Written, _timestamp, _written, append_system, message_json, preview_of
from .receipts import ReceiptTransactions
from .revisions import RevisionTransactions
from .send_rules import group_send_refusal, mention_all_refusal, mention_refusal, reply_refusal
from .tables import conversations, groups, members, mentions, messages, streams

# MemberState, UNCOUNTED_KINDS, Written, append_system, message_json and preview_of are re-exported from
# .conversations and .message_rows, where they live.
__all__ = [
    "UNCOUNTED_KINDS",
    "MemberState",
    "MessageStore",
    "NewMessage",
    "Written",
    "append_system",
    "message_json",
    "preview_of",
]


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
    stream: bool = False
    """Open it as a streaming message (see :mod:`.streams`)."""

    def body(self) -> bytes:
        """The content as stored: its JSON."""
        return self.content.__pydantic_serializer__.to_json(self.content)


class MessageStore(ConversationTransactions, ReceiptTransactions, RevisionTransactions):
    """Named transactions on conversations and messages: the send path here, the others beside their
    transactions (:mod:`.conversations`, :mod:`.receipts`, :mod:`.revisions`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        """The database this store writes to."""
        return self._db

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


# The write path ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bumped:
    id: str
    max_seq: int
    members_version: int


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


# The same three statements for SQLite, run on the driver's cursor inside the SQLAlchemy transaction: a
# one-message transaction (the usual one at low load) otherwise spends more CPU in SQLAlchemy's execution
# layer (result set-up, compiled-cache lookups, events) than in SQLite itself.
_SQLITE_BUMP = (
    "UPDATE conversations SET max_seq = max_seq + ?, last_at = ? WHERE id = ? RETURNING id, max_seq, members_version"
)
_SQLITE_INSERT = (
    "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body, created_at, kind, reply_to, meta) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_READ_OWN = (
    "UPDATE members SET read_seq = ?, updated_at = ? WHERE conversation_id = ? AND user_id = ? AND read_seq < ?"
)


class _SqliteCursor:
    """The driver cursor of a SQLite connection; errors are raised as SQLAlchemy raises them."""

    def __init__(self, conn: Connection) -> None:
        self._dialect = conn.dialect
        # A connection in a transaction always has its driver connection (typed Optional for detached ones).
        self._cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def _wrap(self, exc: Exception, statement: str, params: Any) -> Exception:
        error_class = self._dialect.loaded_dbapi.Error
        if isinstance(exc, error_class):
            return DBAPIError.instance(statement, params, exc, error_class)
        return exc

    def bump(self, counts: dict[str, int], now: int) -> list[tuple[str, int, int]]:
        rows: list[tuple[str, int, int]] = []
        for conversation, count in counts.items():
            params = (count, now, conversation)
            try:
                rows.extend(self._cursor.execute(_SQLITE_BUMP, params).fetchall())
            except Exception as exc:
                raise self._wrap(exc, _SQLITE_BUMP, params) from exc
        return rows

    def executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            self._cursor.executemany(statement, rows)
        except Exception as exc:
            raise self._wrap(exc, statement, rows[:1]) from exc


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
    raw = _SqliteCursor(conn) if conn.dialect.name == "sqlite" else None
    bumped: Any
    if raw is not None:
        bumped = [_Bumped(*row) for row in raw.bump(counts, now)]
    elif len(counts) == 1:
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
    stream_rows: list[dict[str, Any]] = []
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
        if item.stream:
            meta["stream"] = "open"
            stream_rows.append(
                {
                    "conversation_id": item.conversation,
                    "seq": seq,
                    "sender_id": item.sender,
                    "opened_at": now,
                    "touched_at": now,
                    "length": len(getattr(item.content, "text", "")),
                }
            )
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
    if rows_out and raw is not None:
        columns = (
            "conversation_id",
            "seq",
            "sender_id",
            "client_msg_id",
            "body",
            "created_at",
            "kind",
            "reply_to",
            "meta",
        )
        raw.executemany(_SQLITE_INSERT, [tuple(row[column] for column in columns) for row in rows_out])
        raw.executemany(_SQLITE_READ_OWN, [(seq, now, conv, user, seq) for (conv, user), seq in read_up_to.items()])
    elif rows_out:
        conn.execute(_INSERT_MESSAGES, rows_out)
        conn.execute(
            _READ_OWN, [{"c": conv, "u": user, "s": seq, "now": now} for (conv, user), seq in read_up_to.items()]
        )
    if rows_out:
        if shares:
            insert_shares(conn, shares)  # who may download the blobs these messages carry
        if mention_rows:
            conn.execute(insert(mentions), mention_rows)
        if stream_rows:
            conn.execute(insert(streams), stream_rows)
    for index, first in repeats:
        written = results[first]
        results[index] = written.again() if isinstance(written, Written) else written
    return results


def _group_refusals(
    conn: Connection, items: Sequence[NewMessage], now: int
) -> tuple[dict[tuple[str, int], Refusal], dict[tuple[str, int], Any]]:
    """Group sends whose sender is not an active member, is muted, or whose group is dissolved; also the
    senders' membership rows (role, joined_seq) for the other checks.

    Read inside the commit so that a kick or a mute on another node cannot race a send; the rule itself is
    :func:`~.send_rules.group_send_refusal`.
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
        if group is None:
            continue  # no such conversation: the seq allocation reports it
        refusal = group_send_refusal(group, roles.get(pair), now)
        if refusal is not None:
            refusals[pair] = refusal
    return refusals, roles


def _replies_and_mentions(
    conn: Connection, items: Sequence[NewMessage], roles: dict[tuple[str, int], Any]
) -> tuple[dict[int, Refusal], dict[int, dict[str, Any]]]:
    """Check replies (the message exists and the sender may see it) and mentions (of members only;
    ``@all`` by group owners and admins); returns refusals and reply previews, by item index. The rules are
    in :mod:`.send_rules`."""
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
    present: dict[str, set[int]] = {}
    if mentioned_groups:
        users = {user for item in items for user in item.mentions}
        member_rows = conn.execute(
            select(members.c.conversation_id, members.c.user_id).where(
                members.c.conversation_id.in_(mentioned_groups),
                members.c.user_id.in_(users),
                members.c.left_seq.is_(None),
            )
        ).all()
        for row in member_rows:
            present.setdefault(row.conversation_id, set()).add(row.user_id)
    for index, item in enumerate(items):
        member = roles.get((item.conversation, item.sender))
        if item.reply_to is not None:
            original: Any = originals.get((item.conversation, item.reply_to))
            refusal = reply_refusal(original, member.joined_seq if member is not None else 0)
            if refusal is not None:
                refusals[index] = refusal
                continue
            previews[index] = {
                "seq": original.seq,
                "sender": original.sender_id,
                "preview": preview_of(original.kind, original.body),
            }
        refusal = mention_all_refusal(None if member is None else member.role) if item.mention_all else None
        if refusal is None and item.mentions:
            refusal = mention_refusal(item.conversation, item.mentions, present.get(item.conversation, ()))
        if refusal is not None:
            refusals[index] = refusal
    return refusals, previews
