"""Stored messages as JSON: a row becomes the :class:`Written` every frame carries.

The pieces every message transaction shares: the JSON of a message, reply previews and system
messages (each with its own seq).
"""

from __future__ import annotations

from collections.abc import Callable
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


_EXACT = 4_000_000_000_000
"""Below this (year 2096) the float path of :func:`ms_to_datetime` is exact to the millisecond."""
_second: tuple[int, str] = (0, format_timestamp(ms_to_datetime(0))[:-5])
"""The last second formatted, without its milliseconds: a commit and a history page format one or a few."""


def _timestamp(ms: int) -> str:
    """A stored time (ms since the epoch) as the wire writes it (the text up to the second is reused while it
    is the same second)."""
    global _second
    if not 0 <= ms < _EXACT:
        return format_timestamp(ms_to_datetime(ms))
    second, milli = divmod(ms, 1000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, format_timestamp(ms_to_datetime(second * 1000))[:-5])
    return f"{cached[1]}.{milli:03d}Z"


_ALWAYS = ("conversation", "seq", "sender", "client_msg_id", "sent_at", "content")
"""The fields of :class:`~im_schema.models.Message` written on every message, in the schema's order."""

_STORED_AS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "reply_to": ("reply", None),
    "mentions": ("mentions", None),
    "mention_all": ("all", None),
    "edited_at": ("edited_at", _timestamp),
    "stream": ("stream", None),
}
"""Each other field of :class:`~im_schema.models.Message`: the key of the stored ``meta`` it is read from and
how the stored value becomes the wire value (``None``: as it is)."""


def _optional() -> tuple[tuple[str, str, Callable[[Any], Any] | None, Any], ...]:
    """The optional fields in the schema's order, each with its stored key, its conversion and its default.

    Refuses to load if :class:`~im_schema.models.Message` has a field this writer does not know about, or an
    optional field whose default is set (:func:`message_json` writes every set value)."""
    fields = tuple(Message.model_fields)
    if fields[: len(_ALWAYS)] != _ALWAYS or set(fields[len(_ALWAYS) :]) != set(_STORED_AS):
        raise TypeError(f"message_json writes {_ALWAYS} and {tuple(_STORED_AS)}, but Message has {fields}")
    optional = []
    for field in fields[len(_ALWAYS) :]:
        default = Message.model_fields[field].get_default(call_default_factory=True)
        if default:
            raise TypeError(f"Message.{field} has a default that is set: message_json would leave it out")
        optional.append((field, *_STORED_AS[field], default))
    return tuple(optional)


_OPTIONAL = _optional()
"""A field is written when its stored value is set and is not the schema's default (left out, it reads as
the default)."""


def message_json(
    conversation: str,
    seq: int,
    sender: int,
    client_msg_id: str | None,
    sent_at: str,
    body: bytes | str,
    meta: dict[str, Any] | None = None,
) -> bytes:
    """A message's JSON from its stored parts (``body`` is the content's JSON, ``meta`` the stored extras).

    The one writer of a stored message: the send path, history pages, acks and pushes all carry its bytes.
    They are what :class:`~im_schema.models.Message` writes for the fields present (the fields, their order
    and their defaults are read from the schema when this module loads; ``tests/storage/test_message_json.py``
    checks the bytes for every content kind and optional field). The content is stored as JSON already and
    goes in as it is.
    """
    fields: dict[str, Any] = {
        "conversation": conversation,
        "seq": seq,
        "sender": sender,
        "client_msg_id": client_msg_id,
        "sent_at": sent_at,
        "content": orjson.Fragment(body),
    }
    if meta:
        for field, key, wire, default in _OPTIONAL:
            value = meta.get(key)
            if value or (value is not None and value != default):  # every default is falsy
                fields[field] = value if wire is None else wire(value)
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
