"""REST request and response bodies.

Each request model names its endpoint and its response model, so that one code path in each client
builds, sends and parses every call::

    class LoginRequest(Request[Session]):
        endpoint = Endpoint("POST", "/v1/auth/login", Session, auth=False)

Fields named in the path template fill the path; the others go to the query string for ``GET`` and to
the JSON body otherwise.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from .content import OutgoingContent
from .ids import STORABLE_TEXT, ClientMsgId, ConversationId, DeviceId, Seq, UserId, Username, UserRef
from .limits import (
    HISTORY_PAGE_MAX,
    MAX_DISPLAY_NAME_LEN,
    MAX_GATEWAY_ALTERNATES,
    MAX_PASSWORD_LEN,
    MIN_PASSWORD_LEN,
    RECENT_MAX,
)
from .models import ConversationSummary, Message, ReadState, User

__all__ = [
    "ConversationLimit",
    "ConversationPage",
    "ConversationsRequest",
    "Cursor",
    "Endpoint",
    "GatewayAddress",
    "GatewayAssignment",
    "GatewayRequest",
    "GetUserRequest",
    "HistoryRequest",
    "LoginRequest",
    "LogoutRequest",
    "MarkReadRequest",
    "Me",
    "MessagePage",
    "Ok",
    "Password",
    "RecentCount",
    "RefreshRequest",
    "RegisterRequest",
    "Request",
    "SendMessageRequest",
    "Session",
    "WhoAmIRequest",
]

ResponseT = TypeVar("ResponseT", bound=BaseModel)

Cursor = Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9A-Za-z:._-]*$")]
"""Where a listing of conversations stopped, as the server wrote it (``ConversationPage.cursor``); opaque to
clients."""

ConversationLimit = Annotated[int, Field(ge=1, le=1000)]
"""How many conversations one page of "conversations since" may list (``limit``)."""

RecentCount = Annotated[int, Field(ge=0, le=RECENT_MAX)]
"""How many seqs back each conversation of a page carries its newest messages (``recent``)."""

Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD_LEN, max_length=MAX_PASSWORD_LEN)]


@dataclass(frozen=True)
class Endpoint:
    """Where a request goes and what comes back."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    response: type[BaseModel]
    auth: bool = True
    status: int = 200
    """The status of a success."""
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(name for _, name, _, _ in string.Formatter().parse(self.path) if name)
        object.__setattr__(self, "path_params", names)


class Request(BaseModel, Generic[ResponseT]):
    """Base of every request body; ``endpoint`` is set by each subclass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: ClassVar[Endpoint]

    def path(self) -> str:
        """The URL path with the path parameters filled in."""
        values = {name: getattr(self, name) for name in self.endpoint.path_params}
        return self.endpoint.path.format(**values)

    def payload(self) -> dict[str, Any]:
        """The fields that go to the query string or the body, ``None`` values left out."""
        return self.model_dump(mode="json", exclude=set(self.endpoint.path_params), exclude_none=True)


# Responses ----------------------------------------------------------------------------------------


class Ok(BaseModel):
    """An empty success."""

    ok: Literal[True] = True


class Session(BaseModel):
    """Tokens of one logged-in device."""

    access_token: str
    refresh_token: str
    expires_in: int
    """Seconds until the access token expires."""
    user: User
    device_id: DeviceId


class Me(BaseModel):
    """Who the token belongs to."""

    user: User
    device_id: DeviceId


class ConversationPage(BaseModel):
    """Conversations changed since a cursor, most recent first."""

    conversations: list[ConversationSummary]
    cursor: str
    """Pass this as ``since`` next time to get only what changed."""
    has_more: bool


class MessagePage(BaseModel):
    """A run of messages of one conversation, in seq order."""

    conversation: ConversationId
    messages: list[Message]
    has_more: bool
    """More messages exist beyond this page in the direction asked."""
    max_seq: Seq
    """The conversation's newest seq when the page was read."""


class GatewayAddress(BaseModel):
    """A gateway node and the WebSocket URL to reach it."""

    node_id: str
    url: str


class GatewayAssignment(GatewayAddress):
    """The gateway node a device should connect to, and where to go if it is lost."""

    alternates: Annotated[list[GatewayAddress], Field(max_length=MAX_GATEWAY_ALTERNATES)] = []
    """The other live gateways, best first for this device (the order the cluster would assign them in
    if ``node_id`` went away). A client that loses its gateway reconnects to the first alternate it has
    not lost yet without asking the API again: when a gateway dies, its clients all come back at once,
    and the API nodes are then the busiest part of the cluster. A client asks again once it has tried
    them all. Empty from servers that predate it."""


# Requests -----------------------------------------------------------------------------------------


class RegisterRequest(Request[User]):
    """Create an account."""

    endpoint = Endpoint("POST", "/v1/auth/register", User, auth=False, status=201)

    username: Username
    password: Password
    display_name: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_DISPLAY_NAME_LEN, pattern=STORABLE_TEXT)] | None
    ) = None


class LoginRequest(Request[Session]):
    """Log a device in; its earlier session, if any, is replaced."""

    endpoint = Endpoint("POST", "/v1/auth/login", Session, auth=False)

    username: Username
    password: Annotated[str, StringConstraints(max_length=MAX_PASSWORD_LEN)]
    device: DeviceId = "default"


class RefreshRequest(Request[Session]):
    """Trade a refresh token for a new pair; the old refresh token stops working."""

    endpoint = Endpoint("POST", "/v1/auth/refresh", Session, auth=False)

    refresh_token: Annotated[str, StringConstraints(min_length=16, max_length=256)]


class LogoutRequest(Request[Ok]):
    """End this device's session."""

    endpoint = Endpoint("POST", "/v1/auth/logout", Ok)


class WhoAmIRequest(Request[Me]):
    """The token's user and device."""

    endpoint = Endpoint("GET", "/v1/me", Me)


class GetUserRequest(Request[User]):
    """A user's profile, by id or by username."""

    endpoint = Endpoint("GET", "/v1/users/{user}", User)

    user: UserRef


_ONE_TARGET: JsonDict = {
    "oneOf": [
        {"required": ["to"], "properties": {"to": {"not": {"type": "null"}}, "conversation": {"type": "null"}}},
        {
            "required": ["conversation"],
            "properties": {"conversation": {"not": {"type": "null"}}, "to": {"type": "null"}},
        },
    ]
}
"""``to`` or ``conversation``, exactly one, in JSON Schema."""


class SendMessageRequest(Request[Message]):
    """Send a message to a user (``to``) or into a conversation (``conversation``).

    A text, or a caption, made only of whitespace and characters that draw nothing (U+200B, U+FEFF, U+3164...)
    is refused (``400 bad_request``); any other is stored exactly as sent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_ONE_TARGET)

    endpoint = Endpoint("POST", "/v1/messages", Message)

    to: UserId | Username | None = None
    conversation: ConversationId | None = None
    client_msg_id: ClientMsgId
    content: OutgoingContent
    reply_to: Seq | None = None
    """Answer this message of the same conversation (quoted with a preview)."""
    mentions: Annotated[list[UserId], Field(max_length=100)] = Field(default_factory=list)
    """Members to notify; they must be in the conversation."""
    mention_all: bool = False
    """``@all`` (group owners and admins only)."""

    @model_validator(mode="after")
    def _one_target(self) -> SendMessageRequest:
        if (self.to is None) == (self.conversation is None):
            raise ValueError("give exactly one of 'to' and 'conversation'")
        return self


class ConversationsRequest(Request[ConversationPage]):
    """My conversations that changed since a cursor (all of them without one)."""

    endpoint = Endpoint("GET", "/v1/conversations", ConversationPage)

    since: Cursor | None = None
    limit: ConversationLimit = 200
    recent: RecentCount | None = None
    """Each conversation also carries its newest messages, up to this many seqs back from ``max_seq``
    (``recent``, ``recent_after``): a catch-up in one request. None or 0: none."""


class HistoryRequest(Request[MessagePage]):
    """Messages of a conversation by seq range.

    With ``after``, the first ``limit`` messages above it; otherwise the last ``limit`` messages below
    ``before`` (or the newest ones). Bounds are exclusive.
    """

    endpoint = Endpoint("GET", "/v1/conversations/{conversation}/messages", MessagePage)

    conversation: ConversationId
    after: Seq | None = None
    before: Seq | None = None
    limit: Annotated[int, Field(ge=1, le=HISTORY_PAGE_MAX)] = 100


class MarkReadRequest(Request[ReadState]):
    """Mark a conversation read up to ``seq``; read state only moves forward."""

    endpoint = Endpoint("POST", "/v1/conversations/{conversation}/read", ReadState)

    conversation: ConversationId
    seq: Seq


class GatewayRequest(Request[GatewayAssignment]):
    """Which gateway this device should connect to."""

    endpoint = Endpoint("GET", "/v1/gateway", GatewayAssignment)
    avoid: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    """A gateway (its ``node_id``) this device just lost or could not reach: another live one is chosen
    while there is one. A killed gateway is still assigned until the cluster notices (about a second);
    a reconnecting client that names it goes elsewhere at its first attempt."""
