"""The objects of the system, as clients see them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from ._tolerant import Tolerant, UnknownValue
from .content import Content
from .ids import ClientMsgId, ConversationId, DeviceId, Seq, UserId, Username

__all__ = [
    "ConversationSummary",
    "Device",
    "Message",
    "ReadState",
    "ReplyPreview",
    "StorableTimestamp",
    "Timestamp",
    "User",
    "format_timestamp",
]


_StreamState = Literal["open", "finished", "abandoned"]
"""The states of a streaming message (:data:`im_schema.streams.StreamState`)."""


def format_timestamp(moment: datetime) -> str:
    """``2026-11-28T10:08:36.610Z``: UTC, millisecond precision, as every timestamp on the wire."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]
"""An aware datetime, written as :func:`format_timestamp` does."""

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def _storable(moment: datetime) -> datetime:
    # Compared before converting: 9999-12-31T23:00-05:00 lies past year 9999 in UTC, where a datetime
    # cannot go (the conversion, or reading the stored value back, would fail).
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not _EARLIEST <= aware <= _LATEST:
        raise ValueError("the time must lie between 1970-01-01 and 9999-12-30 (UTC)")
    return aware.astimezone(UTC)


StorableTimestamp = Annotated[
    datetime, AfterValidator(_storable), PlainSerializer(format_timestamp, return_type=str, when_used="json")
]
"""A timestamp a client sends (a mute's end, say): between 1970-01-01 and 9999-12-30 UTC, read as UTC when it
has no offset."""


class User(BaseModel):
    """A user's public profile."""

    model_config = ConfigDict(frozen=True)

    id: UserId
    username: Username
    display_name: str
    bio: str = ""
    avatar: str | None = None
    """A URL, or a blob reference once media uploads exist."""
    is_bot: bool = False
    created_at: Timestamp


class Device(BaseModel):
    """One of a user's logged-in devices."""

    model_config = ConfigDict(frozen=True)

    device_id: DeviceId
    created_at: Timestamp
    """When the device logged in (a new login of the same device starts again)."""
    last_seen_at: Timestamp
    """Its last login or token refresh (clients refresh about once per access-token lifetime)."""
    connected: bool = False
    """Holds a WebSocket connection to a live gateway now."""
    current: bool = False
    """The device whose token made the request."""


class Message(BaseModel):
    """One message, at its place ``seq`` in its conversation."""

    model_config = ConfigDict(frozen=True)

    conversation: ConversationId
    seq: Seq
    sender: UserId
    client_msg_id: ClientMsgId | None = None
    """``None`` for messages the server wrote itself."""
    sent_at: Timestamp
    content: Content
    reply_to: ReplyPreview | None = None
    """The message this one answers, as it was when answered."""
    mentions: list[UserId] = Field(default_factory=list)
    mention_all: bool = False
    """``@all``: every member is mentioned (owners and admins only)."""
    edited_at: Timestamp | None = None
    """Set once the sender edited the text."""
    stream: Annotated[_StreamState | UnknownValue, Tolerant(_StreamState)] | None = None
    """Set on a streaming message (see :mod:`im_schema.streams`): ``open`` while its text still grows."""


class ReplyPreview(BaseModel):
    """A quote of the message being answered."""

    model_config = ConfigDict(frozen=True)

    seq: Seq
    sender: UserId
    preview: str
    """The start of its text (or its kind, for media); ``[recalled]`` once recalled."""


class ConversationSummary(BaseModel):
    """A conversation as one member sees it."""

    model_config = ConfigDict(frozen=True)

    id: ConversationId
    kind: Literal["direct", "group"]
    peer: UserId | None = None
    """The other user of a direct conversation."""
    max_seq: Seq
    read_seq: Seq
    """The last seq this user has read, on any device."""
    joined_seq: Seq = 0
    """History before this seq is not visible to this member."""
    unread: int
    last_message: Message | None = None
    updated_at: Timestamp
    left: bool = False
    """I left (or was removed from) this group: ``max_seq`` is where my history ends."""
    mentioned: bool = False
    """An unread message mentions me (or everyone)."""
    peer_read_seq: Seq | None = None
    """In a direct conversation: how far the other user has read (read receipts)."""
    recent: list[Message] = []
    """Asked for with ``recent`` (``GET /v1/conversations?recent=N``): every message this user may see
    with ``recent_after < seq <= max_seq``, in seq order, so that a device that already has everything up
    to ``recent_after`` or beyond needs no history request."""
    recent_after: Seq | None = None
    """Where :attr:`recent` starts: ``max(joined_seq, max_seq - N)``. ``None`` when ``recent`` was not
    asked for, or the page's budget (:data:`~im_schema.limits.RECENT_PAGE_BUDGET`) was spent."""


class ReadState(BaseModel):
    """How far one member has read a conversation."""

    model_config = ConfigDict(frozen=True)

    conversation: ConversationId
    read_seq: Seq
    unread: int
