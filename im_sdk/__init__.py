"""The IM Python SDK: typed clients for bots, scripts and apps.

::

    from im_sdk import AsyncClient

    async with AsyncClient("http://localhost:8080") as client:
        await client.login("alice", "secret", device="bot")
        async for event in client.events():
            if event.text == "ping":
                await event.reply("pong")

:class:`AsyncClient` and :class:`Client` have the same methods. Errors are subclasses of
:class:`IMError` (see :mod:`im_sdk.errors`).
"""

from __future__ import annotations

from im_schema.models import ConversationSummary, Message, ReadState, User
from im_schema.rest import GatewayAssignment, Me, MessagePage, Session

from ._async_client import AsyncClient
from ._sync_client import Client
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConnectionReplaced,
    ConversationNotFoundError,
    ForbiddenError,
    IMError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    TokenExpiredError,
    TransportError,
    UnavailableError,
    UsernameTakenError,
    UserNotFoundError,
)
from .events import MessageEvent, UnknownEvent
from .realtime.backoff import Backoff

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Backoff",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ConnectionReplaced",
    "ConversationNotFoundError",
    "ConversationSummary",
    "ForbiddenError",
    "GatewayAssignment",
    "IMError",
    "InternalServerError",
    "Me",
    "Message",
    "MessageEvent",
    "MessagePage",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitedError",
    "ReadState",
    "Session",
    "TokenExpiredError",
    "TransportError",
    "UnavailableError",
    "UnknownEvent",
    "User",
    "UserNotFoundError",
    "UsernameTakenError",
]
