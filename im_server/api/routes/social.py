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
from ..deps import GroupsDep, PrincipalDep, SocialDep

router = APIRouter(tags=["people"])


@route(router, UpdateProfileRequest)
async def update_profile(body: UpdateProfileRequest, social: SocialDep, principal: PrincipalDep) -> User:
    """Change my display name, bio or avatar."""
    return await social.update_profile(
        principal.user_id, display_name=body.display_name, bio=body.bio, avatar=body.avatar
    )


@route(router, GetPrivacyRequest)
async def privacy(_: GetPrivacyRequest, groups: GroupsDep, principal: PrincipalDep) -> Privacy:
    """My privacy settings (who may add me to groups directly)."""
    return await groups.privacy(principal.user_id)


@route(router, UpdatePrivacyRequest)
async def update_privacy(body: UpdatePrivacyRequest, groups: GroupsDep, principal: PrincipalDep) -> Privacy:
    """Change my privacy settings (fields left out stay as they are)."""
    return await groups.set_privacy(principal.user_id, group_invites=body.group_invites)


@route(router, SendFriendRequest)
async def send_request(body: SendFriendRequest, social: SocialDep, principal: PrincipalDep) -> FriendRequest:
    """Ask someone to be my friend; if they already asked me, we are friends at once (status ``accepted``)."""
    return await social.request(principal.user_id, body.to, body.message)


@route(router, ListFriendRequestsRequest)
async def list_requests(
    request: ListFriendRequestsRequest, social: SocialDep, principal: PrincipalDep
) -> FriendRequestList:
    """Pending requests sent to me (``incoming``, the default) or by me (``outgoing``)."""
    return FriendRequestList(requests=await social.requests(principal.user_id, request.direction))


@route(router, AcceptFriendRequest)
async def accept(parsed: AcceptFriendRequest, social: SocialDep, principal: PrincipalDep) -> FriendInfo:
    """Accept a request sent to me."""
    request = await social.decide(principal.user_id, parsed.request_id, accept=True)
    return await social.friend(principal.user_id, request.from_user.id)


@route(router, DeclineFriendRequest)
async def decline(parsed: DeclineFriendRequest, social: SocialDep, principal: PrincipalDep) -> Ok:
    """Decline a request sent to me."""
    await social.decide(principal.user_id, parsed.request_id, accept=False)
    return Ok()


@route(router, ListFriendsRequest)
async def list_friends(_: ListFriendsRequest, social: SocialDep, principal: PrincipalDep) -> FriendList:
    """My friends, with my remarks and whether they are online."""
    return FriendList(friends=await social.friends(principal.user_id))


@route(router, GetFriendRequest)
async def get_friend(parsed: GetFriendRequest, social: SocialDep, principal: PrincipalDep) -> FriendInfo:
    """One friend."""
    return await social.friend(principal.user_id, parsed.user)


@route(router, SetRemarkRequest)
async def set_remark(parsed: SetRemarkRequest, social: SocialDep, principal: PrincipalDep) -> FriendInfo:
    """My private remark for a friend."""
    return await social.set_remark(principal.user_id, parsed.user, parsed.remark)


@route(router, RemoveFriendRequest)
async def remove_friend(parsed: RemoveFriendRequest, social: SocialDep, principal: PrincipalDep) -> Ok:
    """End a friendship, for both sides."""
    await social.remove(principal.user_id, parsed.user)
    return Ok()


@route(router, BlockRequest)
async def block(body: BlockRequest, social: SocialDep, principal: PrincipalDep) -> Ok:
    """Block a user."""
    await social.block(principal.user_id, body.user)
    return Ok()


@route(router, UnblockRequest)
async def unblock(parsed: UnblockRequest, social: SocialDep, principal: PrincipalDep) -> Ok:
    """Lift a block."""
    await social.unblock(principal.user_id, parsed.user)
    return Ok()


@route(router, ListBlocksRequest)
async def list_blocks(_: ListBlocksRequest, social: SocialDep, principal: PrincipalDep) -> BlockedList:
    """The users I blocked."""
    return BlockedList(users=await social.blocked(principal.user_id))
