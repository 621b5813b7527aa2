"""Groups."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, status

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
    ListJoinRequestsRequest,
    ListMembersRequest,
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

from ..deps import NodeDep, PrincipalDep, parse
from .social import user_ref

router = APIRouter(prefix="/v1/groups", tags=["groups"])

JsonBody = Annotated[dict[str, Any], Body()]
OptionalBody = Annotated[dict[str, Any] | None, Body()]


@router.post("", response_model=Group, status_code=status.HTTP_201_CREATED)
async def create(body: CreateGroupRequest, node: NodeDep, principal: PrincipalDep) -> Group:
    """Create a group; I am its owner and the listed users its first members."""
    return await node.groups.create(
        principal.user_id,
        body.name,
        list(body.members),
        join_policy=body.join_policy,
        allow_member_invite=body.allow_member_invite,
        history_visible=body.history_visible,
    )


@router.get("", response_model=GroupList)
async def mine(node: NodeDep, principal: PrincipalDep) -> GroupList:
    """The groups I am in."""
    return GroupList(groups=await node.groups.mine(principal.user_id))


# Declared before "/{group_id}" so that the literal path wins.
@router.get("/invitations", response_model=GroupInvitationList)
async def my_invitations(node: NodeDep, principal: PrincipalDep) -> GroupInvitationList:
    """The pending invitations to groups sent to me, oldest first."""
    return GroupInvitationList(invitations=await node.groups.my_invitations(principal.user_id))


@router.post("/invitations/{invitation_id}/accept", response_model=Group)
async def accept_invitation(invitation_id: str, node: NodeDep, principal: PrincipalDep) -> Group:
    """Accept an invitation sent to me: I join the group."""
    parsed = parse(AcceptInvitationRequest, invitation_id=invitation_id)
    return await node.groups.accept_invitation(parsed.invitation_id, principal.user_id)


@router.post("/invitations/{invitation_id}/decline", response_model=Ok)
async def decline_invitation(invitation_id: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Decline an invitation sent to me."""
    parsed = parse(DeclineInvitationRequest, invitation_id=invitation_id)
    await node.groups.decline_invitation(parsed.invitation_id, principal.user_id)
    return Ok()


@router.get("/{group_id}", response_model=Group)
async def info(group_id: str, node: NodeDep, principal: PrincipalDep) -> Group:
    """A group's information (the announcement only for members)."""
    parsed = parse(GetGroupRequest, group_id=group_id)
    return await node.groups.info(parsed.group_id, principal.user_id)


@router.patch("/{group_id}", response_model=Group)
async def update(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Group:
    """Rename the group or change its settings (owner and admins)."""
    parsed = parse(UpdateGroupRequest, **{**body, "group_id": group_id})
    changes = parsed.model_dump(exclude={"group_id"}, exclude_none=True)
    return await node.groups.update(parsed.group_id, principal.user_id, changes)


@router.delete("/{group_id}", response_model=Ok)
async def dissolve(group_id: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Dissolve the group (owner)."""
    parsed = parse(DissolveGroupRequest, group_id=group_id)
    await node.groups.dissolve(parsed.group_id, principal.user_id)
    return Ok()


@router.get("/{group_id}/members", response_model=MemberPage)
async def members(
    group_id: str, node: NodeDep, principal: PrincipalDep, after: int | None = None, limit: int | None = None
) -> MemberPage:
    """A page of members by user id, with role, group nickname and online flag (members only)."""
    parsed = parse(ListMembersRequest, group_id=group_id, after=after, limit=limit)
    page, has_more = await node.groups.members(
        parsed.group_id, principal.user_id, after=parsed.after, limit=parsed.limit
    )
    return MemberPage(members=page, has_more=has_more)


@router.post("/{group_id}/join", response_model=JoinResult)
async def join(group_id: str, node: NodeDep, principal: PrincipalDep, body: OptionalBody = None) -> JoinResult:
    """Join an open group, or ask to join one that needs approval."""
    parsed = parse(JoinGroupRequest, **{**(body or {}), "group_id": group_id})
    return await node.groups.join(parsed.group_id, principal.user_id, parsed.message)


@router.get("/{group_id}/requests", response_model=JoinRequestList)
async def requests(group_id: str, node: NodeDep, principal: PrincipalDep) -> JoinRequestList:
    """Pending join requests (owner and admins)."""
    parsed = parse(ListJoinRequestsRequest, group_id=group_id)
    return JoinRequestList(requests=await node.groups.requests(parsed.group_id, principal.user_id))


@router.post("/{group_id}/requests/{request_id}/approve", response_model=Ok)
async def approve(group_id: str, request_id: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Let a requester in."""
    parsed = parse(ApproveJoinRequest, group_id=group_id, request_id=request_id)
    await node.groups.decide(parsed.group_id, parsed.request_id, principal.user_id, approve=True)
    return Ok()


@router.post("/{group_id}/requests/{request_id}/reject", response_model=Ok)
async def reject(group_id: str, request_id: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Turn a requester away."""
    parsed = parse(RejectJoinRequest, group_id=group_id, request_id=request_id)
    await node.groups.decide(parsed.group_id, parsed.request_id, principal.user_id, approve=False)
    return Ok()


@router.post("/{group_id}/leave", response_model=Ok)
async def leave(group_id: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Leave the group."""
    parsed = parse(LeaveGroupRequest, group_id=group_id)
    await node.groups.leave(parsed.group_id, principal.user_id)
    return Ok()


@router.patch("/{group_id}/me", response_model=Group)
async def set_mine(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Group:
    """My nickname in the group and my private remark on it."""
    parsed = parse(UpdateMyMembershipRequest, **{**body, "group_id": group_id})
    return await node.groups.set_mine(
        parsed.group_id, principal.user_id, nickname=parsed.nickname, remark=parsed.remark
    )


@router.post("/{group_id}/invite", response_model=Group)
async def invite(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Group:
    """Add users to the group."""
    parsed = parse(InviteRequest, **{**body, "group_id": group_id})
    return await node.groups.invite(parsed.group_id, principal.user_id, list(parsed.users))


@router.post("/{group_id}/kick", response_model=Ok)
async def kick(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Remove a member."""
    parsed = parse(KickRequest, **{**body, "group_id": group_id})
    await node.groups.kick(parsed.group_id, principal.user_id, parsed.user)
    return Ok()


@router.put("/{group_id}/announcement", response_model=Group)
async def announcement(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Group:
    """Set the announcement (owner and admins)."""
    parsed = parse(SetAnnouncementRequest, **{**body, "group_id": group_id})
    return await node.groups.announce_text(parsed.group_id, principal.user_id, parsed.text)


@router.post("/{group_id}/transfer", response_model=Group)
async def transfer(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Group:
    """Hand ownership to another member (owner)."""
    parsed = parse(TransferOwnershipRequest, **{**body, "group_id": group_id})
    return await node.groups.transfer(parsed.group_id, principal.user_id, parsed.user)


@router.post("/{group_id}/admins", response_model=Ok)
async def add_admin(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Make a member an admin (owner)."""
    parsed = parse(AddAdminRequest, **{**body, "group_id": group_id})
    await node.groups.set_admin(parsed.group_id, principal.user_id, parsed.user, admin=True)
    return Ok()


@router.delete("/{group_id}/admins/{user}", response_model=Ok)
async def remove_admin(group_id: str, user: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Make an admin a plain member again (owner)."""
    parsed = parse(RemoveAdminRequest, group_id=group_id, user=user_ref(user))
    await node.groups.set_admin(parsed.group_id, principal.user_id, parsed.user, admin=False)
    return Ok()


@router.post("/{group_id}/mute", response_model=Ok)
async def mute(group_id: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Mute a member until a time (``until`` omitted or null lifts the mute)."""
    parsed = parse(MuteMemberRequest, **{**body, "group_id": group_id})
    await node.groups.mute(parsed.group_id, principal.user_id, parsed.user, parsed.until)
    return Ok()


@router.get("/{group_id}/invitations", response_model=GroupInvitationList)
async def group_invitations(group_id: str, node: NodeDep, principal: PrincipalDep) -> GroupInvitationList:
    """The group's pending invitations: all for the owner and admins, their own for other members."""
    parsed = parse(ListGroupInvitationsRequest, group_id=group_id)
    return GroupInvitationList(invitations=await node.groups.invitations(parsed.group_id, principal.user_id))


@router.delete("/{group_id}/invitations/{invitation_id}", response_model=Ok)
async def withdraw_invitation(group_id: str, invitation_id: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Take back a pending invitation (its inviter, or the owner and admins)."""
    parsed = parse(WithdrawInvitationRequest, group_id=group_id, invitation_id=invitation_id)
    await node.groups.withdraw_invitation(parsed.group_id, parsed.invitation_id, principal.user_id)
    return Ok()
