"""Cluster administration: accounts, bot accounts and the cluster's nodes, for admins only.

Every request here but :class:`BotLoginRequest` needs an admin's token; anyone else is answered
``403 forbidden``. The first admin is made on the server machine (``im server create-admin``); admins
can then make other admins. A disabled account cannot log in, and its sessions end as on a logout. A
bot account logs in with the token :class:`CreateBotRequest` returned (shown once; the server keeps
only its hash); revoking a bot deletes its tokens and ends its sessions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from ._tolerant import Tolerant, UnknownValue
from .devices import LoggedOut
from .ids import ConversationId, DeviceId, Seq, UserId, Username, UserRef
from .limits import MAX_DISPLAY_NAME_LEN
from .models import Timestamp, User
from .rest import Endpoint, Request, Session

__all__ = [
    "ADMIN_PAGE_MAX",
    "TRACE_LIST_MAX",
    "AdminUser",
    "AdminUserList",
    "BotCreated",
    "BotList",
    "BotLoginRequest",
    "BotToken",
    "ClusterNode",
    "ClusterNodes",
    "ClusterNodesRequest",
    "ClusterStats",
    "ClusterStatsRequest",
    "CreateBotRequest",
    "DeviceRoute",
    "DisableUserRequest",
    "DrainRequest",
    "EnableUserRequest",
    "KickDeviceRequest",
    "ListBotsRequest",
    "ListUsersRequest",
    "MakeAdminRequest",
    "MessageTrace",
    "NodeId",
    "RevokeBotRequest",
    "ShowUserRequest",
    "TraceMessageRequest",
    "TraceNode",
    "TracePush",
    "UserRoutes",
    "UserRoutesRequest",
]

ADMIN_PAGE_MAX = 500
"""The most users one listing returns."""

NodeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""A node's id, as ``im cluster nodes`` lists it."""

BotToken = Annotated[str, StringConstraints(min_length=16, max_length=256)]
"""The secret a bot logs in with."""

# Responses ----------------------------------------------------------------------------------------

_NodeRole = Literal["api", "gateway"]
_NodeState = Literal["serving", "draining"]
_PushKind = Literal["push", "ack"]


class AdminUser(User):
    """A user as an admin sees it: the public profile, the admin flag, whether disabled."""

    is_admin: bool = False
    disabled_at: Timestamp | None = None
    """When the account was disabled; ``None`` while it may log in."""


class AdminUserList(BaseModel):
    """A page of users in id order."""

    users: list[AdminUser]
    next_after: UserId | None = None
    """Pass as ``after`` for the next page; ``None`` on the last one."""


class BotCreated(BaseModel):
    """A new bot account and its token (shown this once)."""

    user: AdminUser
    token: str


class BotList(BaseModel):
    """Every bot account."""

    bots: list[AdminUser]


class ClusterNode(BaseModel):
    """One node of the cluster, from its latest heartbeat."""

    node_id: str
    role: Annotated[_NodeRole | UnknownValue, Tolerant(_NodeRole)]
    address: str
    """The gateway's WebSocket URL, or the API node's id-only placeholder."""
    connections: int
    uptime: float
    """Seconds since the node started."""
    version: str
    state: Annotated[_NodeState | UnknownValue, Tolerant(_NodeState)]
    live: bool
    """Its heartbeat is fresh."""
    frames_in: int | None = None
    """Gateways: WebSocket frames received from clients since the node started."""
    frames_out: int | None = None
    """Gateways: WebSocket frames written to clients since the node started."""
    frames_in_per_s: float | None = None
    """Gateways: frames received per second over the node's last heartbeat interval."""
    frames_out_per_s: float | None = None
    """Gateways: frames written per second over the node's last heartbeat interval."""


class ClusterNodes(BaseModel):
    """The nodes of the cluster, the most loaded first."""

    nodes: list[ClusterNode]


class DeviceRoute(BaseModel):
    """One device of a user and the gateway node holding its connection."""

    device_id: DeviceId
    node_id: str | None
    """``None``: logged in but not connected."""
    live: bool
    """The node holding it is alive."""


class UserRoutes(BaseModel):
    """A user's devices and where each is connected."""

    user: User
    routes: list[DeviceRoute]


class ClusterStats(BaseModel):
    """Cluster totals, and the NATS server's own figures when its monitoring endpoint is configured."""

    nodes: int
    api_nodes: int
    gateway_nodes: int
    connections: int
    routes: int
    users: int
    nats: dict[str, object] | None = None


TRACE_LIST_MAX = 200
"""The most readers (and non-readers) a trace lists; the counts go on."""


class TracePush(BaseModel):
    """A gateway wrote the message to one device: a ``push``, or the ``ack`` of the sender's own send."""

    user_id: UserId
    device_id: str
    kind: Annotated[_PushKind | UnknownValue, Tolerant(_PushKind)]
    at: Timestamp


class TraceNode(BaseModel):
    """What one node still remembers of a message (from its bounded in-memory trace ring)."""

    node_id: str
    role: Annotated[_NodeRole | UnknownValue, Tolerant(_NodeRole)]
    stored_at: Timestamp | None = None
    """API node: when it committed the message."""
    published: dict[str, int] = Field(default_factory=dict)
    """API node: gateway node id -> devices the message was published to there."""
    published_at: Timestamp | None = None
    pushes: list[TracePush] = Field(default_factory=list)
    """Gateway: the devices it wrote the message to (the first ``IM_TRACE_DEVICES``)."""
    pushed: int = 0
    """Gateway: every device it wrote the message to, including those not listed."""


class MessageTrace(BaseModel):
    """One message's way through the cluster: stored (storage is the truth), published, pushed, read.

    Nodes remember only their last ``IM_TRACE_CAPACITY`` messages: a node listed in :attr:`aged_out`
    forgot records since this message was sent, so an empty trace there is no proof of anything.
    """

    conversation: ConversationId
    seq: Seq
    sender: UserId
    client_msg_id: str | None
    sent_at: Timestamp
    stored_by: str | None
    """The API node that committed it, while that node remembers."""
    nodes: list[TraceNode]
    """The nodes that remember something of the message."""
    aged_out: list[str]
    """Live nodes without a record whose memory no longer reaches back to the message."""
    started_later: list[str]
    """Live nodes without a record that started after the message was sent."""
    silent: list[str]
    """Live nodes that did not answer in time."""
    read: list[UserId]
    """Members (not the sender) whose read position covers the message (the first 200)."""
    unread: list[UserId]
    """Members who could see it and have not read it yet (the first 200)."""
    read_count: int
    unread_count: int


# Requests -----------------------------------------------------------------------------------------


class ListUsersRequest(Request[AdminUserList]):
    """Users in id order, after a cursor."""

    endpoint = Endpoint("GET", "/v1/admin/users", AdminUserList)

    after: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=ADMIN_PAGE_MAX)] = 100


class ShowUserRequest(Request[AdminUser]):
    """One user, by id or username."""

    endpoint = Endpoint("GET", "/v1/admin/users/{user}", AdminUser)

    user: UserRef


class DisableUserRequest(Request[AdminUser]):
    """Disable an account: it cannot log in, and every session of it ends now."""

    endpoint = Endpoint("POST", "/v1/admin/users/{user}/disable", AdminUser)

    user: UserRef


class EnableUserRequest(Request[AdminUser]):
    """Let a disabled account log in again."""

    endpoint = Endpoint("POST", "/v1/admin/users/{user}/enable", AdminUser)

    user: UserRef


class MakeAdminRequest(Request[AdminUser]):
    """Make a user an admin."""

    endpoint = Endpoint("POST", "/v1/admin/users/{user}/make-admin", AdminUser)

    user: UserRef


class CreateBotRequest(Request[BotCreated]):
    """Create a bot account and a token for it."""

    endpoint = Endpoint("POST", "/v1/admin/bots", BotCreated, status=201)

    username: Username
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DISPLAY_NAME_LEN)] | None = None


class ListBotsRequest(Request[BotList]):
    """Every bot account."""

    endpoint = Endpoint("GET", "/v1/admin/bots", BotList)


class RevokeBotRequest(Request[LoggedOut]):
    """Delete a bot's tokens and end its sessions; the account and its history stay."""

    endpoint = Endpoint("DELETE", "/v1/admin/bots/{bot}", LoggedOut)

    bot: UserRef


class BotLoginRequest(Request[Session]):
    """Log a bot device in with its token."""

    endpoint = Endpoint("POST", "/v1/auth/bot", Session, auth=False)

    token: BotToken
    device: DeviceId = "bot"


class ClusterNodesRequest(Request[ClusterNodes]):
    """The cluster's nodes from the node registry."""

    endpoint = Endpoint("GET", "/v1/admin/cluster/nodes", ClusterNodes)


class UserRoutesRequest(Request[UserRoutes]):
    """Each device of a user and the node holding it."""

    endpoint = Endpoint("GET", "/v1/admin/cluster/routes/{user}", UserRoutes)

    user: UserRef


class ClusterStatsRequest(Request[ClusterStats]):
    """Cluster totals."""

    endpoint = Endpoint("GET", "/v1/admin/cluster/stats", ClusterStats)


class KickDeviceRequest(Request[LoggedOut]):
    """End a user's device session(s) as a logout does: tokens refused, connections closed (4012)."""

    endpoint = Endpoint("POST", "/v1/admin/cluster/kick", LoggedOut)

    user: UserId | Username
    device: DeviceId | None = None


class DrainRequest(Request[ClusterNode]):
    """Drain a gateway node: it takes no new clients, sends its clients elsewhere (close 4010), leaves the
    assignment, and stops once empty."""

    endpoint = Endpoint("POST", "/v1/admin/cluster/drain", ClusterNode)

    node: NodeId


class TraceMessageRequest(Request[MessageTrace]):
    """Trace one message: when stored, published to which gateways, pushed to which devices, read by whom."""

    endpoint = Endpoint("GET", "/v1/admin/cluster/trace/{conversation}/{seq}", MessageTrace)

    conversation: ConversationId
    seq: Seq
