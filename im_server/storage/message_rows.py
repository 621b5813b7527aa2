"""Stored messages as JSON: a row becomes the :class:`Written` every frame carries.

The pieces every message transaction shares: the JSON of a message, reply previews and system
messages (each with its own seq).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, insert, update

from im_schema.content import SystemContent
from im_schema.models import Message, format_timestamp

from ._util import ms_to_datetime
from .tables import conversations, messages

__all__ = [
    "UNCOUNTED_KINDS",
    "Written",
    "append_system",
    "message_json",
    "preview_of",
]


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
        if meta.get("stream"):
            fields["stream"] = meta["stream"]
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


_EXACT = 4_000_000_000_000
"""Below this (year 2096) the float path of :func:`ms_to_datetime` is exact to the millisecond."""
_second: tuple[int, str] = (0, format_timestamp(ms_to_datetime(0))[:-5])
"""The last second formatted, without its milliseconds: a commit and a history page format one or a few."""


def _timestamp(ms: int) -> str:
    """:func:`format_timestamp` of a time in ms (the text up to the second is reused while it is the same)."""
    global _second
    if not 0 <= ms < _EXACT:
        return format_timestamp(ms_to_datetime(ms))
    second, milli = divmod(ms, 1000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, format_timestamp(ms_to_datetime(second * 1000))[:-5])
    return f"{cached[1]}.{milli:03d}Z"


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
