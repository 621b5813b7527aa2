"""Profiles, friends and blocks."""

from __future__ import annotations

from fastapi import APIRouter

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
    GetPrivacyRequest,
    ListBlocksRequest,
    ListFriendRequestsRequest,
    ListFriendsRequest,
    Privacy,
    RemoveFriendRequest,
    SendFriendRequest,
    SetRemarkRequest,
    UnblockRequest,
    UpdatePrivacyRequest,
    UpdateProfileRequest,
)

from ..contract import route
from ..deps import NodeDep, PrincipalDep

router = APIRouter(tags=["people"])


@route(router, UpdateProfileRequest)
async def update_profile(body: UpdateProfileRequest, node: NodeDep, principal: PrincipalDep) -> User:
    """Change my display name, bio or avatar."""
    return await node.social.update_profile(
        principal.user_id, display_name=body.display_name, bio=body.bio, avatar=body.avatar
    )


@route(router, GetPrivacyRequest)
async def privacy(_: GetPrivacyRequest, node: NodeDep, principal: PrincipalDep) -> Privacy:
    """My privacy settings (who may add me to groups directly)."""
    return await node.groups.privacy(principal.user_id)


@route(router, UpdatePrivacyRequest)
async def update_privacy(body: UpdatePrivacyRequest, node: NodeDep, principal: PrincipalDep) -> Privacy:
    """Change my privacy settings (fields left out stay as they are)."""
    return await node.groups.set_privacy(principal.user_id, group_invites=body.group_invites)


@route(router, SendFriendRequest)
async def send_request(body: SendFriendRequest, node: NodeDep, principal: PrincipalDep) -> FriendRequest:
    """Ask someone to be my friend; if they already asked me, we are friends at once (status ``accepted``)."""
    return await node.social.request(principal.user_id, body.to, body.message)


@route(router, ListFriendRequestsRequest)
async def list_requests(
    request: ListFriendRequestsRequest, node: NodeDep, principal: PrincipalDep
) -> FriendRequestList:
    """Pending requests sent to me (``incoming``, the default) or by me (``outgoing``)."""
    return FriendRequestList(requests=await node.social.requests(principal.user_id, request.direction))


@route(router, AcceptFriendRequest)
async def accept(parsed: AcceptFriendRequest, node: NodeDep, principal: PrincipalDep) -> FriendInfo:
    """Accept a request sent to me."""
    request = await node.social.decide(principal.user_id, parsed.request_id, accept=True)
    return await node.social.friend(principal.user_id, request.from_user.id)


@route(router, DeclineFriendRequest)
async def decline(parsed: DeclineFriendRequest, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Decline a request sent to me."""
    await node.social.decide(principal.user_id, parsed.request_id, accept=False)
    return Ok()


@route(router, ListFriendsRequest)
async def list_friends(_: ListFriendsRequest, node: NodeDep, principal: PrincipalDep) -> FriendList:
    """My friends, with my remarks and whether they are online."""
    return FriendList(friends=await node.social.friends(principal.user_id))


@route(router, GetFriendRequest)
async def get_friend(parsed: GetFriendRequest, node: NodeDep, principal: PrincipalDep) -> FriendInfo:
    """One friend."""
    return await node.social.friend(principal.user_id, parsed.user)


@route(router, SetRemarkRequest)
async def set_remark(parsed: SetRemarkRequest, node: NodeDep, principal: PrincipalDep) -> FriendInfo:
    """My private remark for a friend."""
    return await node.social.set_remark(principal.user_id, parsed.user, parsed.remark)


@route(router, RemoveFriendRequest)
async def remove_friend(parsed: RemoveFriendRequest, node: NodeDep, principal: PrincipalDep) -> Ok:
    """End a friendship, for both sides."""
    await node.social.remove(principal.user_id, parsed.user)
    return Ok()


@route(router, BlockRequest)
async def block(body: BlockRequest, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Block a user."""
    await node.social.block(principal.user_id, body.user)
    return Ok()


@route(router, UnblockRequest)
async def unblock(parsed: UnblockRequest, node: NodeDep, principal: PrincipalDep) -> Ok:
    """Lift a block."""
    await node.social.unblock(principal.user_id, parsed.user)
    return Ok()


@route(router, ListBlocksRequest)
async def list_blocks(_: ListBlocksRequest, node: NodeDep, principal: PrincipalDep) -> BlockedList:
    """The users I blocked."""
    return BlockedList(users=await node.social.blocked(principal.user_id))
