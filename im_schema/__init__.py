"""The one contract between the server, the SDK and the CLI.

Only pydantic is imported here. Modules:

- :mod:`~im_schema.ids`: typed ids and conversation id helpers
- :mod:`~im_schema.limits`: protocol version, hard limits, WebSocket close codes
- :mod:`~im_schema.errors`: :class:`ErrorCode` and the error envelope
- :mod:`~im_schema.content`: message contents, a union on ``kind``
- :mod:`~im_schema.files`: uploading and downloading the blobs of media messages
- :mod:`~im_schema.models`: users, messages, conversation summaries
- :mod:`~im_schema.rest`: one request model per endpoint, naming its response model
- :mod:`~im_schema.streams`: streaming messages (open, write at an offset, finish)
- :mod:`~im_schema.frames`: WebSocket frames, unions on ``type``
"""

from __future__ import annotations

from ._tolerant import UnknownValue
from .content import (
    BlobId,
    Content,
    FileContent,
    ImageContent,
    MediaKind,
    OutgoingContent,
    OutgoingFile,
    OutgoingImage,
    OutgoingVideo,
    OutgoingVoice,
    Preview,
    SystemContent,
    SystemEvent,
    TextContent,
    UnknownContent,
    VideoContent,
    VoiceContent,
    is_blank,
)
from .errors import HTTP_STATUS, ErrorBody, ErrorCode, ErrorEnvelope, http_status
from .files import FileLimits, Upload
from .frames import (
    AckFrame,
    AuthFrame,
    ClientFrame,
    ErrorFrame,
    MessageFrame,
    PingFrame,
    PongFrame,
    ReadyFrame,
    SendFrame,
    ServerFrame,
    client_frames,
    server_frames,
)
from .ids import (
    ClientMsgId,
    ConversationId,
    DeviceId,
    GroupId,
    Seq,
    UserId,
    Username,
    conversation_kind,
    direct_conversation,
    direct_peer,
    direct_users,
    group_conversation,
    group_of,
    is_conversation_id,
)
from .limits import PROTOCOL_VERSION
from .models import ConversationSummary, Device, Message, ReadState, User

__all__ = [
    "HTTP_STATUS",
    "PROTOCOL_VERSION",
    "AckFrame",
    "AuthFrame",
    "BlobId",
    "ClientFrame",
    "ClientMsgId",
    "Content",
    "ConversationId",
    "ConversationSummary",
    "Device",
    "DeviceId",
    "ErrorBody",
    "ErrorCode",
    "ErrorEnvelope",
    "ErrorFrame",
    "FileContent",
    "FileLimits",
    "GroupId",
    "ImageContent",
    "MediaKind",
    "Message",
    "MessageFrame",
    "OutgoingContent",
    "OutgoingFile",
    "OutgoingImage",
    "OutgoingVideo",
    "OutgoingVoice",
    "PingFrame",
    "PongFrame",
    "Preview",
    "ReadState",
    "ReadyFrame",
    "SendFrame",
    "Seq",
    "ServerFrame",
    "SystemContent",
    "SystemEvent",
    "TextContent",
    "UnknownContent",
    "UnknownValue",
    "Upload",
    "User",
    "UserId",
    "Username",
    "VideoContent",
    "VoiceContent",
    "client_frames",
    "conversation_kind",
    "direct_conversation",
    "direct_peer",
    "direct_users",
    "group_conversation",
    "group_of",
    "http_status",
    "is_blank",
    "is_conversation_id",
    "server_frames",
]
