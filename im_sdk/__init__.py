"""The IM Python SDK: typed clients for bots, scripts and apps.

::

    from im_sdk import AsyncClient

    async with AsyncClient("http://localhost:8080") as client:
        await client.login("alice", "secret", device="bot")
        async for event in client.events():
            if event.text == "ping":
                await event.reply("pong")

:class:`AsyncClient` and :class:`Client` have the same methods (the blocking client is generated from
the asynchronous one). Errors are subclasses of :class:`IMError` (see :mod:`im_sdk.errors`); failed
requests are retried as :class:`Retry` says (see :mod:`im_sdk.retry`).
"""

from __future__ import annotations

from im_schema import UnknownValue
from im_schema.buttons import Button
from im_schema.files import FileLimits, Upload
from im_schema.models import ConversationSummary, Message, ReadState, User
from im_schema.presses import BotCommand, Press
from im_schema.rest import GatewayAddress, GatewayAssignment, Me, MessagePage, Session

from ._async_client import AsyncClient
from ._streams import AsyncMessageStream
from ._sync_client import Client
from ._sync_streams import MessageStream
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    BlobNotFoundError,
    ConflictError,
    ConnectionReplaced,
    ConversationNotFoundError,
    CorruptMediaError,
    ForbiddenError,
    IMError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RangeNotSatisfiableError,
    RateLimitedError,
    RefusedTypeError,
    TokenExpiredError,
    TooManyDevicesError,
    TransportError,
    UnavailableError,
    UnsupportedMediaError,
    UsernameTakenError,
    UserNotFoundError,
)
from .events import (
    ButtonPressEvent,
    EditEvent,
    Event,
    MessageEvent,
    NoticeEvent,
    PresenceEvent,
    ReadEvent,
    RecallEvent,
    StreamEvent,
    TypingEvent,
    UnknownEvent,
)
from .realtime.backoff import Backoff
from .retry import Retry

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncMessageStream",
    "AuthenticationError",
    "Backoff",
    "BadRequestError",
    "BlobNotFoundError",
    "BotCommand",
    "Button",
    "ButtonPressEvent",
    "Client",
    "ConflictError",
    "ConnectionReplaced",
    "ConversationNotFoundError",
    "ConversationSummary",
    "CorruptMediaError",
    "EditEvent",
    "Event",
    "FileLimits",
    "ForbiddenError",
    "GatewayAddress",
    "GatewayAssignment",
    "IMError",
    "InternalServerError",
    "Me",
    "Message",
    "MessageEvent",
    "MessagePage",
    "MessageStream",
    "NotFoundError",
    "NoticeEvent",
    "PayloadTooLargeError",
    "PresenceEvent",
    "Press",
    "ProtocolError",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "ReadEvent",
    "ReadState",
    "RecallEvent",
    "RefusedTypeError",
    "Retry",
    "Session",
    "StreamEvent",
    "TokenExpiredError",
    "TooManyDevicesError",
    "TransportError",
    "TypingEvent",
    "UnavailableError",
    "UnknownEvent",
    "UnknownValue",
    "UnsupportedMediaError",
    "Upload",
    "User",
    "UserNotFoundError",
    "UsernameTakenError",
]
