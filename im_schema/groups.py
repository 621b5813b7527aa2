"""Groups: models and REST requests.

A group's conversation is ``g:<gid>``. Every change to a group is also a system message in that
conversation (``SystemContent`` with one of :data:`GROUP_EVENTS`), with its own seq, so that members who
were offline learn it by sync.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ._tolerant import Tolerant, UnknownValue
from .ids import MAX_ID, STORABLE_TEXT, ConversationId, GroupId, RecordId, UserId, Username
from .ids import UserRef as PathUserRef
from .models import StorableTimestamp, Timestamp, User
from .rest import Endpoint, Ok, Request

__all__ = [
    "GROUP_EVENTS",
    "AcceptInvitationRequest",
    "AddAdminRequest",
    "ApproveJoinRequest",
    "CreateGroupRequest",
    "DeclineInvitationRequest",
    "DissolveGroupRequest",
    "GetGroupRequest",
    "Group",
    "GroupInvitation",
    "GroupInvitationList",
    "GroupList",
    "GroupMember",
    "InvitationStatus",
    "InviteRequest",
    "JoinGroupRequest",
    "JoinRequest",
    "JoinRequestList",
    "JoinResult",
    "KickRequest",
    "LeaveGroupRequest",
    "ListGroupInvitationsRequest",
    "ListGroupsRequest",
    "ListJoinRequestsRequest",
    "ListMembersRequest",
    "ListMyInvitationsRequest",
    "MemberPage",
    "MuteMemberRequest",
    "RejectJoinRequest",
    "RemoveAdminRequest",
    "Role",
    "SetAnnouncementRequest",
    "TransferOwnershipRequest",
    "UpdateGroupRequest",
    "UpdateMyMembershipRequest",
    "WithdrawInvitationRequest",
]

Role = Literal["owner", "admin", "member"]
JoinPolicy = Literal["open", "approval", "invite_only"]
GroupName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=STORABLE_TEXT)]
Nickname = Annotated[str, StringConstraints(max_length=64, pattern=STORABLE_TEXT)]
Announcement = Annotated[str, StringConstraints(max_length=4000, pattern=STORABLE_TEXT)]
RequestMessage = Annotated[str, StringConstraints(max_length=200, pattern=STORABLE_TEXT)]
UserRef = UserId | Username
InvitationStatus = Literal["pending", "accepted", "declined", "withdrawn", "expired"]
_JoinRequestStatus = Literal["pending", "approved", "rejected"]
_JoinStatus = Literal["joined", "requested"]
InvitationId = Annotated[int, Field(ge=1, le=2**63 - 1)]

GROUP_EVENTS = frozenset(
    {
        "group_created",
        "group_updated",
        "group_dissolved",
        "members_joined",
        "member_left",
        "member_kicked",
        "announcement_set",
        "owner_transferred",
        "admin_added",
        "admin_removed",
        "member_muted",
        "member_unmuted",
        "nickname_set",
    }
)
"""The ``event`` of the system messages a group's conversation carries."""


class Group(BaseModel):
    """A group as one member sees it."""

    model_config = ConfigDict(frozen=True)

    id: GroupId
    conversation: ConversationId
    name: str
    owner: UserId
    join_policy: Annotated[JoinPolicy | UnknownValue, Tolerant(JoinPolicy)]
    allow_member_invite: bool
    history_visible: bool
    """Whether new members see the messages from before they joined."""
    muted_all: bool
    announcement: str = ""
    announcement_at: Timestamp | None = None
    member_count: int
    dissolved: bool = False
    created_at: Timestamp
    my_role: Annotated[Role | UnknownValue, Tolerant(Role)] | None = None
    my_nickname: str | None = None
    my_remark: str | None = None
    """My private name for the group, seen only by me."""


class GroupList(BaseModel):
    groups: list[Group]


class GroupMember(BaseModel):
    """One member of a group."""

    model_config = ConfigDict(frozen=True)

    user: User
    role: Annotated[Role | UnknownValue, Tolerant(Role)]
    nickname: str | None = None
    online: bool
    muted_until: Timestamp | None = None
    joined_at: Timestamp


class MemberPage(BaseModel):
    """Members ordered by user id; pass the last id as ``after`` for the next page."""

    members: list[GroupMember]
    has_more: bool


class JoinRequest(BaseModel):
    """A user asking to join a group that needs approval."""

    model_config = ConfigDict(frozen=True)

    id: int
    group_id: GroupId
    user: User
    message: str = ""
    status: Annotated[_JoinRequestStatus | UnknownValue, Tolerant(_JoinRequestStatus)]
    created_at: Timestamp


class JoinRequestList(BaseModel):
    requests: list[JoinRequest]


class JoinResult(BaseModel):
    """``joined`` at once (open group), or ``requested`` (the owner or an admin decides)."""

    status: Annotated[_JoinStatus | UnknownValue, Tolerant(_JoinStatus)]
    group: Group | None = None
    request: JoinRequest | None = None


class GroupInvitation(BaseModel):
    """An invitation to a group that waits for the invitee's answer.

    Users whose privacy setting does not let the inviter add them directly (see
    :class:`~im_schema.social.Privacy`) are invited instead of added. Only the invitee, the inviter and
    the group's owner and admins see an invitation. A pending invitation lapses at ``expires_at``
    (status ``expired``).
    """

    model_config = ConfigDict(frozen=True)

    id: int
    group_id: GroupId
    group_name: str
    inviter: User
    invitee: User
    status: Annotated[InvitationStatus | UnknownValue, Tolerant(InvitationStatus)]
    created_at: Timestamp
    expires_at: Timestamp
    decided_at: Timestamp | None = None
    """When it was accepted, declined or withdrawn."""


class GroupInvitationList(BaseModel):
    invitations: list[GroupInvitation]


class CreateGroupRequest(Request[Group]):
    """Create a group; I become its owner and the listed users its first members (or are invited, when
    their privacy setting asks for it)."""

    endpoint = Endpoint("POST", "/v1/groups", Group, status=201)

    name: GroupName
    members: Annotated[list[UserRef], Field(max_length=500)] = Field(default_factory=list)
    join_policy: JoinPolicy = "approval"
    allow_member_invite: bool = True
    history_visible: bool = False


class ListGroupsRequest(Request[GroupList]):
    """The groups I am a member of."""

    endpoint = Endpoint("GET", "/v1/groups", GroupList)


class GetGroupRequest(Request[Group]):
    """A group's information (members only, except for open groups)."""

    endpoint = Endpoint("GET", "/v1/groups/{group_id}", Group)

    group_id: GroupId


class UpdateGroupRequest(Request[Group]):
    """Rename the group or change its settings (owner and admins); ``muted_all`` lets only them speak."""

    endpoint = Endpoint("PATCH", "/v1/groups/{group_id}", Group)

    group_id: GroupId
    name: GroupName | None = None
    join_policy: JoinPolicy | None = None
    allow_member_invite: bool | None = None
    history_visible: bool | None = None
    muted_all: bool | None = None


class ListMembersRequest(Request[MemberPage]):
    """A page of members, by user id."""

    endpoint = Endpoint("GET", "/v1/groups/{group_id}/members", MemberPage)

    group_id: GroupId
    after: Annotated[int, Field(ge=0, le=MAX_ID)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 200


class JoinGroupRequest(Request[JoinResult]):
    """Join an open group, or ask to join one that needs approval."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/join", JoinResult)

    group_id: GroupId
    message: RequestMessage = ""


class ListJoinRequestsRequest(Request[JoinRequestList]):
    """Pending join requests (owner and admins)."""

    endpoint = Endpoint("GET", "/v1/groups/{group_id}/requests", JoinRequestList)

    group_id: GroupId


class ApproveJoinRequest(Request[Ok]):
    """Let the requester in (owner and admins)."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/requests/{request_id}/approve", Ok)

    group_id: GroupId
    request_id: RecordId


class RejectJoinRequest(Request[Ok]):
    """Turn the requester away (owner and admins)."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/requests/{request_id}/reject", Ok)

    group_id: GroupId
    request_id: RecordId


class LeaveGroupRequest(Request[Ok]):
    """Leave a group (the owner transfers ownership or dissolves it instead)."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/leave", Ok)

    group_id: GroupId


class UpdateMyMembershipRequest(Request[Group]):
    """My nickname in the group (seen by all) and my private remark on it (seen by me)."""

    endpoint = Endpoint("PATCH", "/v1/groups/{group_id}/me", Group)

    group_id: GroupId
    nickname: Nickname | None = None
    remark: Nickname | None = None


class InviteRequest(Request[Group]):
    """Add users to the group (members may when the group allows it); users whose privacy setting does
    not let me add them get a :class:`GroupInvitation` to accept instead."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/invite", Group)

    group_id: GroupId
    users: Annotated[list[UserRef], Field(min_length=1, max_length=1000)]


class KickRequest(Request[Ok]):
    """Remove a member (owner and admins; an admin cannot remove the owner or another admin)."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/kick", Ok)

    group_id: GroupId
    user: UserRef


class DissolveGroupRequest(Request[Ok]):
    """End the group for everyone (owner)."""

    endpoint = Endpoint("DELETE", "/v1/groups/{group_id}", Ok)

    group_id: GroupId


class SetAnnouncementRequest(Request[Group]):
    """Set the announcement everyone sees (owner and admins); an empty text clears it."""

    endpoint = Endpoint("PUT", "/v1/groups/{group_id}/announcement", Group)

    group_id: GroupId
    text: Announcement


class TransferOwnershipRequest(Request[Group]):
    """Make another member the owner (owner); the old owner stays as an admin."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/transfer", Group)

    group_id: GroupId
    user: UserRef


class AddAdminRequest(Request[Ok]):
    """Make a member an admin (owner)."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/admins", Ok)

    group_id: GroupId
    user: UserRef


class RemoveAdminRequest(Request[Ok]):
    """Make an admin a plain member again (owner)."""

    endpoint = Endpoint("DELETE", "/v1/groups/{group_id}/admins/{user}", Ok)

    group_id: GroupId
    user: PathUserRef


class MuteMemberRequest(Request[Ok]):
    """Stop a member from speaking until a time (owner and admins); ``until=None`` lifts the mute."""

    endpoint = Endpoint("POST", "/v1/groups/{group_id}/mute", Ok)

    group_id: GroupId
    user: UserRef
    until: StorableTimestamp | None = None


class ListMyInvitationsRequest(Request[GroupInvitationList]):
    """The pending invitations to groups sent to me, oldest first."""

    endpoint = Endpoint("GET", "/v1/groups/invitations", GroupInvitationList)


class ListGroupInvitationsRequest(Request[GroupInvitationList]):
    """A group's pending invitations: all of them for the owner and admins, their own for other members."""

    endpoint = Endpoint("GET", "/v1/groups/{group_id}/invitations", GroupInvitationList)

    group_id: GroupId


class AcceptInvitationRequest(Request[Group]):
    """Accept an invitation sent to me: I join the group."""

    endpoint = Endpoint("POST", "/v1/groups/invitations/{invitation_id}/accept", Group)

    invitation_id: InvitationId


class DeclineInvitationRequest(Request[Ok]):
    """Decline an invitation sent to me (the group cannot invite me again for a while)."""

    endpoint = Endpoint("POST", "/v1/groups/invitations/{invitation_id}/decline", Ok)

    invitation_id: InvitationId


class WithdrawInvitationRequest(Request[Ok]):
    """Take back a pending invitation (its inviter, or the group's owner and admins)."""

    endpoint = Endpoint("DELETE", "/v1/groups/{group_id}/invitations/{invitation_id}", Ok)

    group_id: GroupId
    invitation_id: InvitationId
