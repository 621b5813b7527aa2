"""User profiles."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.errors import ErrorCode
from im_schema.models import User
from im_schema.rest import GetUserRequest

from ...errors import NotFound
from ..deps import NodeDep, PrincipalDep, parse

router = APIRouter(prefix="/v1", tags=["users"])


@router.get("/users/{user}", response_model=User)
async def get_user(user: str, node: NodeDep, _: PrincipalDep) -> User:
    """A user's profile, by numeric id or by username."""
    request = parse(GetUserRequest, user=int(user) if user.isdigit() else user)
    if isinstance(request.user, int):
        found = await node.users.get(request.user)
    else:
        found = await node.users.get_by_username(request.user)
    if found is None:
        raise NotFound(f"no user {user!r}", code=ErrorCode.USER_NOT_FOUND)
    return found
