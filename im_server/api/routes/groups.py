"""Groups."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.groups import (
    AcceptInvitationRequest,
    AddAdminRequest,
    ApproveJoinRequest,
    CreateGroupRequest,
    DeclineInvitationRequest,
    DissolveGroupRequest,
    GetGroupRequest,
    Group,
    GroupInvitationList,
    GroupList,
    InviteRequest,
    JoinGroupRequest,
    JoinRequestList,
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
from im_schema.rest import Ok

from ..contract import route
from ..deps import GroupsDep, PrincipalDep

router = APIRouter(tags=["groups"])


@route(router, CreateGroupRequest)
async def create(body: CreateGroupRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """Create a group; I am its owner and the listed users its first members."""
    return await groups.create(
        principal.user_id,
        body.name,
        list(body.members),
        join_policy=body.join_policy,
        allow_member_invite=body.allow_member_invite,
        history_visible=body.history_visible,
    )


@route(router, ListGroupsRequest)
async def mine(_: ListGroupsRequest, groups: GroupsDep, principal: PrincipalDep) -> GroupList:
    """The groups I am in."""
    return GroupList(groups=await groups.mine(principal.user_id))


# Declared before "/v1/groups/{group_id}" so that the literal path wins.
@route(router, ListMyInvitationsRequest)
async def my_invitations(
    _: ListMyInvitationsRequest, groups: GroupsDep, principal: PrincipalDep
) -> GroupInvitationList:
    """The pending invitations to groups sent to me, oldest first."""
    return GroupInvitationList(invitations=await groups.my_invitations(principal.user_id))


@route(router, AcceptInvitationRequest)
async def accept_invitation(parsed: AcceptInvitationRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """Accept an invitation sent to me: I join the group."""
    return await groups.accept_invitation(parsed.invitation_id, principal.user_id)


@route(router, DeclineInvitationRequest)
async def decline_invitation(parsed: DeclineInvitationRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Decline an invitation sent to me."""
    await groups.decline_invitation(parsed.invitation_id, principal.user_id)
    return Ok()


@route(router, GetGroupRequest)
async def info(parsed: GetGroupRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """A group's information (the announcement only for members)."""
    return await groups.info(parsed.group_id, principal.user_id)


@route(router, UpdateGroupRequest)
async def update(parsed: UpdateGroupRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """Rename the group or change its settings (owner and admins)."""
    changes = parsed.model_dump(exclude={"group_id"}, exclude_none=True)
    return await groups.update(parsed.group_id, principal.user_id, changes)


@route(router, DissolveGroupRequest)
async def dissolve(parsed: DissolveGroupRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Dissolve the group (owner)."""
    await groups.dissolve(parsed.group_id, principal.user_id)
    return Ok()


@route(router, ListMembersRequest)
async def members(parsed: ListMembersRequest, groups: GroupsDep, principal: PrincipalDep) -> MemberPage:
    """A page of members by user id, with role, group nickname and online flag (members only)."""
    page, has_more = await groups.members(parsed.group_id, principal.user_id, after=parsed.after, limit=parsed.limit)
    return MemberPage(members=page, has_more=has_more)


@route(router, JoinGroupRequest)
async def join(parsed: JoinGroupRequest, groups: GroupsDep, principal: PrincipalDep) -> JoinResult:
    """Join an open group, or ask to join one that needs approval."""
    return await groups.join(parsed.group_id, principal.user_id, parsed.message)


@route(router, ListJoinRequestsRequest)
async def requests(parsed: ListJoinRequestsRequest, groups: GroupsDep, principal: PrincipalDep) -> JoinRequestList:
    """Pending join requests (owner and admins)."""
    return JoinRequestList(requests=await groups.requests(parsed.group_id, principal.user_id))


@route(router, ApproveJoinRequest)
async def approve(parsed: ApproveJoinRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Let a requester in."""
    await groups.decide(parsed.group_id, parsed.request_id, principal.user_id, approve=True)
    return Ok()


@route(router, RejectJoinRequest)
async def reject(parsed: RejectJoinRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Turn a requester away."""
    await groups.decide(parsed.group_id, parsed.request_id, principal.user_id, approve=False)
    return Ok()


@route(router, LeaveGroupRequest)
async def leave(parsed: LeaveGroupRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Leave the group."""
    await groups.leave(parsed.group_id, principal.user_id)
    return Ok()


@route(router, UpdateMyMembershipRequest)
async def set_mine(parsed: UpdateMyMembershipRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """My nickname in the group and my private remark on it."""
    return await groups.set_mine(parsed.group_id, principal.user_id, nickname=parsed.nickname, remark=parsed.remark)


@route(router, InviteRequest)
async def invite(parsed: InviteRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """Add users to the group."""
    return await groups.invite(parsed.group_id, principal.user_id, list(parsed.users))


@route(router, KickRequest)
async def kick(parsed: KickRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Remove a member."""
    await groups.kick(parsed.group_id, principal.user_id, parsed.user)
    return Ok()


@route(router, SetAnnouncementRequest)
async def announcement(parsed: SetAnnouncementRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """Set the announcement (owner and admins)."""
    return await groups.announce_text(parsed.group_id, principal.user_id, parsed.text)


@route(router, TransferOwnershipRequest)
async def transfer(parsed: TransferOwnershipRequest, groups: GroupsDep, principal: PrincipalDep) -> Group:
    """Hand ownership to another member (owner)."""
    return await groups.transfer(parsed.group_id, principal.user_id, parsed.user)


@route(router, AddAdminRequest)
async def add_admin(parsed: AddAdminRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Make a member an admin (owner)."""
    await groups.set_admin(parsed.group_id, principal.user_id, parsed.user, admin=True)
    return Ok()


@route(router, RemoveAdminRequest)
async def remove_admin(parsed: RemoveAdminRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Make an admin a plain member again (owner)."""
    await groups.set_admin(parsed.group_id, principal.user_id, parsed.user, admin=False)
    return Ok()


@route(router, MuteMemberRequest)
async def mute(parsed: MuteMemberRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Mute a member until a time (``until`` omitted or null lifts the mute)."""
    await groups.mute(parsed.group_id, principal.user_id, parsed.user, parsed.until)
    return Ok()


@route(router, ListGroupInvitationsRequest)
async def group_invitations(
    parsed: ListGroupInvitationsRequest, groups: GroupsDep, principal: PrincipalDep
) -> GroupInvitationList:
    """The group's pending invitations: all for the owner and admins, their own for other members."""
    return GroupInvitationList(invitations=await groups.invitations(parsed.group_id, principal.user_id))


@route(router, WithdrawInvitationRequest)
async def withdraw_invitation(parsed: WithdrawInvitationRequest, groups: GroupsDep, principal: PrincipalDep) -> Ok:
    """Take back a pending invitation (its inviter, or the owner and admins)."""
    await groups.withdraw_invitation(parsed.group_id, parsed.invitation_id, principal.user_id)
    return Ok()
