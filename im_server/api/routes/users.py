"""User profiles."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.errors import ErrorCode
from im_schema.models import User
from im_schema.rest import GetUserRequest

from ...errors import NotFound
from ..contract import route
from ..deps import NodeDep, PrincipalDep

router = APIRouter(tags=["users"])


@route(router, GetUserRequest)
async def get_user(request: GetUserRequest, node: NodeDep, _: PrincipalDep) -> User:
    """A user's profile, by numeric id or by username."""
    if isinstance(request.user, int):
        found = await node.users.get(request.user)
    else:
        found = await node.users.get_by_username(request.user)
    if found is None:
        raise NotFound(f"no user {request.user!r}", code=ErrorCode.USER_NOT_FOUND)
    return found
