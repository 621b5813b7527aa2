"""The objects of the system, as clients see them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, PlainSerializer

from .content import Content
from .ids import ClientMsgId, ConversationId, DeviceId, Seq, UserId, Username

__all__ = [
    "ConversationSummary",
    "Device",
    "Message",
    "ReadState",
    "Timestamp",
    "User",
    "format_timestamp",
]


def format_timestamp(moment: datetime) -> str:
    """``2026-11-28T10:08:36.610Z``: UTC, millisecond precision, as every timestamp on the wire."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]
"""An aware datetime, written as :func:`format_timestamp` does."""


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
    last_seen_at: Timestamp


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


class ReadState(BaseModel):
    """How far one member has read a conversation."""

    model_config = ConfigDict(frozen=True)

    conversation: ConversationId
    read_seq: Seq
    unread: int
