"""``client.friends`` and ``client.groups``: every people and group operation, typed.

Each method builds one request model of :mod:`im_schema` and sends it through the client's
:meth:`~im_sdk.AsyncClient.request`. The blocking twins (``im_sdk/_sync_people.py``) are generated from
``im_sdk/_people.py`` by ``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from im_schema.groups import (
    AcceptInvitationRequest,
    AddAdminRequest,
    ApproveJoinRequest,
    CreateGroupRequest,
    DeclineInvitationRequest,
    DissolveGroupRequest,
    GetGroupRequest,
    Group,
    GroupInvitation,
    InviteRequest,
    JoinGroupRequest,
    JoinRequest,
    JoinResult,
    KickRequest,
    LeaveGroupRequest,
    ListGroupInvitationsRequest,
    ListGroupsRequest,
    ListJoinRequestsRequest,
    ListMembersRequest,
    ListMyInvitationsRequest,
    MemberPage,
    MuteMemberRequest,
    RejectJoinRequest,
    RemoveAdminRequest,
    SetAnnouncementRequest,
    TransferOwnershipRequest,
    UpdateGroupRequest,
    UpdateMyMembershipRequest,
    WithdrawInvitationRequest,
)
from im_schema.models import User
from im_schema.social import (
    AcceptFriendRequest,
    BlockRequest,
    DeclineFriendRequest,
    FriendInfo,
    FriendRequest,
    GetFriendRequest,
    GetPrivacyRequest,
    GroupInvitePolicy,
    ListBlocksRequest,
    ListFriendRequestsRequest,
    ListFriendsRequest,
    Privacy,
    RemoveFriendRequest,
    SendFriendRequest,
    SetRemarkRequest,
    UnblockRequest,
    UpdatePrivacyRequest,
)

if TYPE_CHECKING:
    from ._async_client import AsyncClient

__all__ = ["AsyncFriends", "AsyncGroups"]

UserRef = int | str
JoinPolicy = Literal["open", "approval", "invite_only"]
Direction = Literal["incoming", "outgoing"]


def _until(value: datetime | timedelta | None) -> datetime | None:
    if isinstance(value, timedelta):
        return datetime.now(UTC) + value
    return value


class AsyncFriends:
    """Friends, friend requests, blocks and privacy settings."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def request(self, user: UserRef, message: str = "") -> FriendRequest:
        """Ask ``user`` to be my friend (status ``accepted`` if they had asked me)."""
        return await self._client.request(SendFriendRequest(to=user, message=message))

    async def requests(self, direction: Direction = "incoming") -> builtins.list[FriendRequest]:
        """Pending requests to me (or by me)."""
        return (await self._client.request(ListFriendRequestsRequest(direction=direction))).requests

    async def accept(self, request_id: int) -> FriendInfo:
        """Accept a request."""
        return await self._client.request(AcceptFriendRequest(request_id=request_id))

    async def decline(self, request_id: int) -> None:
        """Decline a request."""
        await self._client.request(DeclineFriendRequest(request_id=request_id))

    async def list(self) -> builtins.list[FriendInfo]:
        """My friends."""
        return (await self._client.request(ListFriendsRequest())).friends

    async def info(self, user: UserRef) -> FriendInfo:
        """One friend: profile, my remark, online."""
        return await self._client.request(GetFriendRequest(user=user))

    async def remark(self, user: UserRef, remark: str) -> FriendInfo:
        """Set my private remark for a friend ("" clears it)."""
        return await self._client.request(SetRemarkRequest(user=user, remark=remark))

    async def remove(self, user: UserRef) -> None:
        """End a friendship for both sides."""
        await self._client.request(RemoveFriendRequest(user=user))

    async def block(self, user: UserRef) -> None:
        """Block a user."""
        await self._client.request(BlockRequest(user=user))

    async def unblock(self, user: UserRef) -> None:
        """Lift a block."""
        await self._client.request(UnblockRequest(user=user))

    async def blocked(self) -> builtins.list[User]:
        """Whom I blocked."""
        return (await self._client.request(ListBlocksRequest())).users

    async def privacy(self) -> Privacy:
        """My privacy settings (who may add me to groups directly)."""
        return await self._client.request(GetPrivacyRequest())

    async def set_privacy(self, *, group_invites: GroupInvitePolicy | None = None) -> Privacy:
        """Change my privacy settings: ``group_invites`` is ``everyone``, ``friends`` or ``nobody``."""
        return await self._client.request(UpdatePrivacyRequest(group_invites=group_invites))


class AsyncGroups:
    """Every group operation. Send to a group with ``client.send_text(group.conversation, text)``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        name: str,
        members: builtins.list[UserRef] | None = None,
        *,
        join_policy: JoinPolicy = "approval",
        allow_member_invite: bool = True,
        history_visible: bool = False,
    ) -> Group:
        """Create a group (I am the owner)."""
        request = CreateGroupRequest(
            name=name,
            members=members or [],
            join_policy=join_policy,
            allow_member_invite=allow_member_invite,
            history_visible=history_visible,
        )
        return await self._client.request(request)

    async def list(self) -> builtins.list[Group]:
        """My groups."""
        return (await self._client.request(ListGroupsRequest())).groups

    async def info(self, group_id: int) -> Group:
        """A group's information."""
        return await self._client.request(GetGroupRequest(group_id=group_id))

    async def update(
        self,
        group_id: int,
        *,
        name: str | None = None,
        join_policy: JoinPolicy | None = None,
        allow_member_invite: bool | None = None,
        history_visible: bool | None = None,
        muted_all: bool | None = None,
    ) -> Group:
        """Rename the group or change its settings (owner and admins)."""
        request = UpdateGroupRequest(
            group_id=group_id,
            name=name,
            join_policy=join_policy,
            allow_member_invite=allow_member_invite,
            history_visible=history_visible,
            muted_all=muted_all,
        )
        return await self._client.request(request)

    async def members(self, group_id: int, *, after: int = 0, limit: int = 200) -> MemberPage:
        """A page of members (pass the last user id as ``after`` for the next)."""
        return await self._client.request(ListMembersRequest(group_id=group_id, after=after, limit=limit))

    async def join(self, group_id: int, message: str = "") -> JoinResult:
        """Join (open groups) or ask to join (groups that need approval)."""
        return await self._client.request(JoinGroupRequest(group_id=group_id, message=message))

    async def requests(self, group_id: int) -> builtins.list[JoinRequest]:
        """Pending join requests (owner and admins)."""
        return (await self._client.request(ListJoinRequestsRequest(group_id=group_id))).requests

    async def approve(self, group_id: int, request_id: int) -> None:
        """Let a requester in."""
        await self._client.request(ApproveJoinRequest(group_id=group_id, request_id=request_id))

    async def reject(self, group_id: int, request_id: int) -> None:
        """Turn a requester away."""
        await self._client.request(RejectJoinRequest(group_id=group_id, request_id=request_id))

    async def leave(self, group_id: int) -> None:
        """Leave the group."""
        await self._client.request(LeaveGroupRequest(group_id=group_id))

    async def nickname(self, group_id: int, nickname: str) -> Group:
        """My nickname in the group ("" clears it)."""
        return await self._client.request(UpdateMyMembershipRequest(group_id=group_id, nickname=nickname))

    async def remark(self, group_id: int, remark: str) -> Group:
        """My private remark on the group ("" clears it)."""
        return await self._client.request(UpdateMyMembershipRequest(group_id=group_id, remark=remark))

    async def invite(self, group_id: int, users: builtins.list[UserRef]) -> Group:
        """Add users to the group (those whose privacy setting asks for it get an invitation instead)."""
        return await self._client.request(InviteRequest(group_id=group_id, users=users))

    async def invitations(self, group_id: int | None = None) -> builtins.list[GroupInvitation]:
        """Pending invitations sent to me; with ``group_id``, the group's (all for its owner and admins,
        my own for other members)."""
        if group_id is None:
            return (await self._client.request(ListMyInvitationsRequest())).invitations
        return (await self._client.request(ListGroupInvitationsRequest(group_id=group_id))).invitations

    async def accept(self, invitation_id: int) -> Group:
        """Accept an invitation sent to me: I join the group."""
        return await self._client.request(AcceptInvitationRequest(invitation_id=invitation_id))

    async def decline(self, invitation_id: int) -> None:
        """Decline an invitation sent to me."""
        await self._client.request(DeclineInvitationRequest(invitation_id=invitation_id))

    async def withdraw(self, group_id: int, invitation_id: int) -> None:
        """Take back a pending invitation (its inviter, or the owner and admins)."""
        await self._client.request(WithdrawInvitationRequest(group_id=group_id, invitation_id=invitation_id))

    async def kick(self, group_id: int, user: UserRef) -> None:
        """Remove a member (owner and admins)."""
        await self._client.request(KickRequest(group_id=group_id, user=user))

    async def dissolve(self, group_id: int) -> None:
        """Dissolve the group (owner)."""
        await self._client.request(DissolveGroupRequest(group_id=group_id))

    async def notice(self, group_id: int, text: str) -> Group:
        """Set the announcement (owner and admins; "" clears it)."""
        return await self._client.request(SetAnnouncementRequest(group_id=group_id, text=text))

    async def transfer(self, group_id: int, user: UserRef) -> Group:
        """Hand ownership to a member (owner)."""
        return await self._client.request(TransferOwnershipRequest(group_id=group_id, user=user))

    async def add_admin(self, group_id: int, user: UserRef) -> None:
        """Make a member an admin (owner)."""
        await self._client.request(AddAdminRequest(group_id=group_id, user=user))

    async def remove_admin(self, group_id: int, user: UserRef) -> None:
        """Make an admin a member again (owner)."""
        await self._client.request(RemoveAdminRequest(group_id=group_id, user=user))

    async def mute(self, group_id: int, user: UserRef, until: datetime | timedelta | None) -> None:
        """Mute a member until a time or for a while; ``None`` lifts the mute."""
        await self._client.request(MuteMemberRequest(group_id=group_id, user=user, until=_until(until)))

    async def mute_all(self, group_id: int, muted: bool = True) -> Group:
        """Let only the owner and admins speak (or everyone again)."""
        return await self.update(group_id, muted_all=muted)
