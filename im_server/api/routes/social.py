"""Profiles, friends and blocks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, status

from im_schema.models import User
from im_schema.rest import Ok
from im_schema.social import (
    AcceptFriendRequest,
    BlockedList,
    BlockRequest,
    DeclineFriendRequest,
    FriendInfo,
    FriendList,
    FriendRequest,
    FriendRequestList,
    GetFriendRequest,
    ListFriendRequestsRequest,
    Privacy,
    RemoveFriendRequest,
    SendFriendRequest,
    SetRemarkRequest,
    UnblockRequest,
    UpdatePrivacyRequest,
    UpdateProfileRequest,
)

from ..deps import NodeDep, PrincipalDep, parse

router = APIRouter(prefix="/v1", tags=["people"])

JsonBody = Annotated[dict[str, Any], Body()]


def user_ref(value: str) -> int | str:
    """A path segment naming a user: digits are an id, anything else a username."""
    return int(value) if value.isdigit() else value


@router.patch("/me/profile", response_model=User)
async def update_profile(body: UpdateProfileRequest, node: NodeDep, principal: PrincipalDep) -> User:
    """Change my display name, bio or avatar."""
    return await node.social.update_profile(
        principal.user_id, display_name=body.display_name, bio=body.bio, avatar=body.avatar
    )


@router.get("/me/privacy", response_model=Privacy)
async def privacy(node: NodeDep, principal: PrincipalDep) -> Privacy:
    """My privacy settings (who may add me to groups directly)."""
    return await node.groups.privacy(principal.user_id)


@router.patch("/me/privacy", response_model=Privacy)
async def update_privacy(body: UpdatePrivacyRequest, node: NodeDep, principal: PrincipalDep) -> Privacy:
    """Change my privacy settings (fields left out stay as they are)."""
    return await node.groups.set_privacy(principal.user_id, group_invites=body.group_invites)


@router.post("/friends/requests", response_model=FriendRequest, status_code=status.HTTP_201_CREATED)
async def send_request(body: SendFriendRequest, node: NodeDep, principal: PrincipalDep) -> FriendRequest:
    """Ask someone to be my friend; if they already asked me, we are friends at once (status ``accepted``)."""
    return await node.social.request(principal.user_id, body.to, body.message)


@router.get("/friends/requests", response_model=FriendRequestList)
async def list_requests(node: NodeDep, principal: PrincipalDep, direction: str | None = None) -> FriendRequestList:
    """Pending requests sent to me (``incoming``, the default) or by me (``outgoing``)."""
    request = parse(ListFriendRequestsRequest, direction=direction)
    return FriendRequestList(requests=await node.social.requests(principal.user_id, request.direction))


@router.post("/friends/requests/{request_id}/accept", response_model=FriendInfo)
async def accept(request_id: str, node: NodeDep, principal: PrincipalDep) -> FriendInfo:
    """Accept a request sent to me."""
    parsed = parse(AcceptFriendRequest, request_id=request_id)
    request = await node.social.decide(principal.user_id, parsed.request_id, accept=True)
    return await node.social.friend(principal.user_id, request.from_user.id)


@router.post("/friends/requests/{request_id}/decline", response_model=Ok)
async def decline(request_id: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Decline a request sent to me."""
    parsed = parse(DeclineFriendRequest, request_id=request_id)
    await node.social.decide(principal.user_id, parsed.request_id, accept=False)
    return Ok()


@router.get("/friends", response_model=FriendList)
async def list_friends(node: NodeDep, principal: PrincipalDep) -> FriendList:
    """My friends, with my remarks and whether they are online."""
    return FriendList(friends=await node.social.friends(principal.user_id))


@router.get("/friends/{user}", response_model=FriendInfo)
async def get_friend(user: str, node: NodeDep, principal: PrincipalDep) -> FriendInfo:
    """One friend."""
    parsed = parse(GetFriendRequest, user=user_ref(user))
    return await node.social.friend(principal.user_id, parsed.user)


@router.patch("/friends/{user}", response_model=FriendInfo)
async def set_remark(user: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> FriendInfo:
    """My private remark for a friend."""
    parsed = parse(SetRemarkRequest, **{**body, "user": user_ref(user)})
    return await node.social.set_remark(principal.user_id, parsed.user, parsed.remark)


@router.delete("/friends/{user}", response_model=Ok)
async def remove_friend(user: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """End a friendship, for both sides."""
    parsed = parse(RemoveFriendRequest, user=user_ref(user))
    await node.social.remove(principal.user_id, parsed.user)
    return Ok()


@router.post("/blocks", response_model=Ok)
async def block(body: BlockRequest, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Block a user."""
    await node.social.block(principal.user_id, body.user)
    return Ok()


@router.delete("/blocks/{user}", response_model=Ok)
async def unblock(user: str, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Lift a block."""
    parsed = parse(UnblockRequest, user=user_ref(user))
    await node.social.unblock(principal.user_id, parsed.user)
    return Ok()


@router.get("/blocks", response_model=BlockedList)
async def list_blocks(node: NodeDep, principal: PrincipalDep) -> BlockedList:
    """The users I blocked."""
    return BlockedList(users=await node.social.blocked(principal.user_id))
