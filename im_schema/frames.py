"""WebSocket frames: JSON objects discriminated on ``type``.

A client connects to its gateway and sends ``auth`` first; the gateway answers ``ready`` (or closes with
a 4xxx code, see :mod:`im_schema.limits`). After that the client may ``send`` messages (answered by
``ack`` or ``error`` with the same ``client_msg_id``), ``sync`` (answered by ``sync`` or ``error`` with the
same ``id``) and ``ping``; the server pushes ``message`` frames.

Decode with the module-level adapters :data:`client_frames` and :data:`server_frames`.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, TypeAdapter, model_validator
from pydantic import Strict as _Strict

from .content import OutgoingContent
from .events import Notice
from .ids import ClientMsgId, ConversationId, DeviceId, Seq, UserId, Username
from .limits import PROTOCOL_VERSION
from .models import Message
from .rest import ConversationLimit, ConversationPage, ConversationsRequest, Cursor, RecentCount

__all__ = [
    "SERVER_FRAME_TYPES",
    "AckFrame",
    "AuthFrame",
    "ClientFrame",
    "ErrorFrame",
    "FrameId",
    "MessageFrame",
    "NoticeFrame",
    "PingFrame",
    "PongFrame",
    "ReadyFrame",
    "ResyncFrame",
    "SendFrame",
    "ServerFrame",
    "SyncFrame",
    "SyncPageFrame",
    "TypingFrame",
    "client_frames",
    "server_frames",
]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Client to server ---------------------------------------------------------------------------------


class AuthFrame(_Frame):
    """The first frame of every connection."""

    type: Literal["auth"] = "auth"
    token: Annotated[str, StringConstraints(max_length=2048)]
    protocol: Annotated[int, _Strict(), Field(ge=0, le=2**31 - 1)] = PROTOCOL_VERSION


class PingFrame(_Frame):
    """Application-level liveness check; answered by ``pong``."""

    type: Literal["ping"] = "ping"
    id: Annotated[str, StringConstraints(max_length=64)] | None = None


class SendFrame(_Frame):
    """Send a message; the same rules as ``POST /v1/messages``."""

    type: Literal["send"] = "send"
    to: UserId | Username | None = None
    conversation: ConversationId | None = None
    client_msg_id: ClientMsgId
    content: OutgoingContent
    reply_to: Annotated[Seq, _Strict()] | None = None
    mentions: Annotated[list[Annotated[UserId, _Strict()]], Field(max_length=100)] = Field(default_factory=list)
    mention_all: StrictBool = False

    @model_validator(mode="after")
    def _one_target(self) -> SendFrame:
        if (self.to is None) == (self.conversation is None):
            raise ValueError("give exactly one of 'to' and 'conversation'")
        return self


class TypingFrame(_Frame):
    """I am typing (or stopped) in a conversation; shown to the others, never stored."""

    type: Literal["typing"] = "typing"
    conversation: ConversationId
    active: StrictBool = True


FrameId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""A client's name for one of its requests, echoed in the answer."""


class SyncFrame(_Frame):
    """My conversations changed since a cursor: ``GET /v1/conversations`` on the open connection.

    The same fields, bounds and meaning as :class:`~im_schema.rest.ConversationsRequest`; answered by a
    ``sync`` frame (:class:`SyncPageFrame`) or an ``error`` frame with the same ``id``. One at a time per
    connection: a second one sent before the first is answered is refused (``rate_limited``).
    """

    type: Literal["sync"] = "sync"
    id: FrameId
    since: Cursor | None = None
    limit: Annotated[ConversationLimit, _Strict()] = 200
    recent: Annotated[RecentCount, _Strict()] | None = None

    def request(self) -> ConversationsRequest:
        """The same question as a REST request."""
        return ConversationsRequest(since=self.since, limit=self.limit, recent=self.recent)


ClientFrame = Annotated[AuthFrame | PingFrame | SendFrame | SyncFrame | TypingFrame, Field(discriminator="type")]


# Server to client ---------------------------------------------------------------------------------


class ReadyFrame(_Frame):
    """Authentication succeeded; pushes follow."""

    type: Literal["ready"] = "ready"
    protocol: int = PROTOCOL_VERSION
    node_id: str
    user_id: UserId
    device_id: DeviceId


class MessageFrame(_Frame):
    """A new message in one of the user's conversations."""

    type: Literal["message"] = "message"
    message: Message


class AckFrame(_Frame):
    """A ``send`` was committed."""

    type: Literal["ack"] = "ack"
    client_msg_id: ClientMsgId
    message: Message


class ErrorFrame(_Frame):
    """A frame was refused; ``client_msg_id`` names the ``send`` it answers, ``id`` the ``sync``, if any."""

    type: Literal["error"] = "error"
    code: str
    message: str
    client_msg_id: str | None = None
    id: str | None = None
    retry_after: float | None = None


class SyncPageFrame(_Frame):
    """The answer to a ``sync`` frame: what ``GET /v1/conversations`` would have answered.

    A page may list fewer conversations than asked for (``has_more`` is then true; follow ``cursor``):
    the server keeps each answer under a size bound.
    """

    type: Literal["sync"] = "sync"
    id: str
    page: ConversationPage


class NoticeFrame(_Frame):
    """Something happened that is not a message (a friend request, say); see :mod:`im_schema.events`."""

    type: Literal["notice"] = "notice"
    notice: Notice


class PongFrame(_Frame):
    """The answer to ``ping``."""

    type: Literal["pong"] = "pong"
    id: str | None = None


class ResyncFrame(_Frame):
    """Pushes may have been missed (the node lost the bus for a while, say): sync now from your cursors.

    Nothing is lost on the server: the client runs "conversations since" from its last cursor and pulls
    what it lacks, exactly as after a reconnect, but without reconnecting.
    """

    type: Literal["resync"] = "resync"
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


ServerFrame = Annotated[
    ReadyFrame | MessageFrame | AckFrame | ErrorFrame | PongFrame | NoticeFrame | ResyncFrame | SyncPageFrame,
    Field(discriminator="type"),
]

client_frames: TypeAdapter[AuthFrame | PingFrame | SendFrame | SyncFrame | TypingFrame] = TypeAdapter(ClientFrame)
"""Decodes a client frame from JSON."""

server_frames: TypeAdapter[
    ReadyFrame | MessageFrame | AckFrame | ErrorFrame | PongFrame | NoticeFrame | ResyncFrame | SyncPageFrame
] = TypeAdapter(ServerFrame)
"""Decodes a server frame from JSON."""

SERVER_FRAME_TYPES: frozenset[str] = frozenset(
    get_args(branch.model_fields["type"].annotation)[0] for branch in get_args(get_args(ServerFrame)[0])
)
"""The frame types this version of the server sends (read from :data:`ServerFrame`); a reader turns any other
type into an unknown-frame value rather than failing."""
