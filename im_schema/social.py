"""Profiles, friends and blocks: models and REST requests."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from ._tolerant import Tolerant, UnknownValue
from .ids import STORABLE_TEXT, RecordId, UserId, Username, UserRef
from .limits import MAX_DISPLAY_NAME_LEN
from .models import Timestamp, User
from .rest import Endpoint, Ok, Request

__all__ = [
    "AcceptFriendRequest",
    "BlockRequest",
    "BlockedList",
    "DeclineFriendRequest",
    "FriendInfo",
    "FriendList",
    "FriendRequest",
    "FriendRequestList",
    "GetFriendRequest",
    "GetPrivacyRequest",
    "GroupInvitePolicy",
    "ListBlocksRequest",
    "ListFriendRequestsRequest",
    "ListFriendsRequest",
    "Privacy",
    "RemoveFriendRequest",
    "SendFriendRequest",
    "SetRemarkRequest",
    "UnblockRequest",
    "UpdatePrivacyRequest",
    "UpdateProfileRequest",
]

Remark = Annotated[str, StringConstraints(max_length=64, pattern=STORABLE_TEXT)]
Bio = Annotated[str, StringConstraints(max_length=500, pattern=STORABLE_TEXT)]
RequestMessage = Annotated[str, StringConstraints(max_length=200, pattern=STORABLE_TEXT)]
GroupInvitePolicy = Literal["everyone", "friends", "nobody"]
_FriendRequestStatus = Literal["pending", "accepted", "declined"]
"""Who may add me to a group directly: ``everyone`` (but users I blocked), my ``friends``, or ``nobody``;
anyone else's invitation waits for me to accept it."""


class FriendRequest(BaseModel):
    """A request from one user to another to become friends."""

    model_config = ConfigDict(frozen=True)

    id: int
    from_user: User
    to_user: User
    message: str = ""
    status: Annotated[_FriendRequestStatus | UnknownValue, Tolerant(_FriendRequestStatus)]
    created_at: Timestamp


class FriendInfo(BaseModel):
    """A friend as I see them: their profile, my private remark, and whether they are online."""

    model_config = ConfigDict(frozen=True)

    user: User
    remark: str | None = None
    online: bool
    since: Timestamp


class FriendList(BaseModel):
    friends: list[FriendInfo]


class FriendRequestList(BaseModel):
    requests: list[FriendRequest]


class BlockedList(BaseModel):
    users: list[User]


class UpdateProfileRequest(Request[User]):
    """Change my display name, bio or avatar (fields left out stay as they are)."""

    endpoint = Endpoint("PATCH", "/v1/me/profile", User)

    display_name: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_DISPLAY_NAME_LEN, pattern=STORABLE_TEXT)] | None
    ) = None
    bio: Bio | None = None
    avatar: Annotated[str, StringConstraints(max_length=500, pattern=STORABLE_TEXT)] | None = None


class SendFriendRequest(Request[FriendRequest]):
    """Ask someone to be my friend. If they asked me already, we become friends at once."""

    endpoint = Endpoint("POST", "/v1/friends/requests", FriendRequest, status=201)

    to: UserId | Username
    message: RequestMessage = ""


class ListFriendRequestsRequest(Request[FriendRequestList]):
    """Pending requests sent to me (``incoming``) or by me (``outgoing``)."""

    endpoint = Endpoint("GET", "/v1/friends/requests", FriendRequestList)

    direction: Literal["incoming", "outgoing"] = "incoming"


class AcceptFriendRequest(Request[FriendInfo]):
    """Accept a request sent to me."""

    endpoint = Endpoint("POST", "/v1/friends/requests/{request_id}/accept", FriendInfo)

    request_id: RecordId


class DeclineFriendRequest(Request[Ok]):
    """Decline a request sent to me."""

    endpoint = Endpoint("POST", "/v1/friends/requests/{request_id}/decline", Ok)

    request_id: RecordId


class ListFriendsRequest(Request[FriendList]):
    """My friends."""

    endpoint = Endpoint("GET", "/v1/friends", FriendList)


class GetFriendRequest(Request[FriendInfo]):
    """One friend's profile, my remark and their online state."""

    endpoint = Endpoint("GET", "/v1/friends/{user}", FriendInfo)

    user: UserRef


class SetRemarkRequest(Request[FriendInfo]):
    """My private remark (alias) for a friend; an empty string clears it."""

    endpoint = Endpoint("PATCH", "/v1/friends/{user}", FriendInfo)

    user: UserRef
    remark: Remark


class RemoveFriendRequest(Request[Ok]):
    """End a friendship, for both sides."""

    endpoint = Endpoint("DELETE", "/v1/friends/{user}", Ok)

    user: UserRef


class BlockRequest(Request[Ok]):
    """Block a user: they cannot message or befriend me and learn nothing of my presence."""

    endpoint = Endpoint("POST", "/v1/blocks", Ok)

    user: UserId | Username


class UnblockRequest(Request[Ok]):
    """Lift a block."""

    endpoint = Endpoint("DELETE", "/v1/blocks/{user}", Ok)

    user: UserRef


class ListBlocksRequest(Request[BlockedList]):
    """The users I blocked."""

    endpoint = Endpoint("GET", "/v1/blocks", BlockedList)


class Privacy(BaseModel):
    """My privacy settings."""

    model_config = ConfigDict(frozen=True)

    group_invites: Annotated[GroupInvitePolicy | UnknownValue, Tolerant(GroupInvitePolicy)]
    """Who may add me to a group directly; others' invitations wait for my answer."""


class GetPrivacyRequest(Request[Privacy]):
    """My privacy settings."""

    endpoint = Endpoint("GET", "/v1/me/privacy", Privacy)


class UpdatePrivacyRequest(Request[Privacy]):
    """Change my privacy settings (fields left out stay as they are)."""

    endpoint = Endpoint("PATCH", "/v1/me/privacy", Privacy)

    group_invites: GroupInvitePolicy | None = None
