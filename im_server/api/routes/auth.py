"""Accounts and sessions."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.models import User
from im_schema.rest import LoginRequest, LogoutRequest, Me, Ok, RefreshRequest, RegisterRequest, Session, WhoAmIRequest

from ...errors import Unauthorized
from ..contract import route
from ..deps import NodeDep, PrincipalDep

router = APIRouter(tags=["auth"])


@route(router, RegisterRequest)
async def register(body: RegisterRequest, node: NodeDep) -> User:
    """Create an account."""
    return await node.auth.register(body.username, body.password, body.display_name)


@route(router, LoginRequest)
async def login(body: LoginRequest, node: NodeDep) -> Session:
    """Log a device in and get its tokens."""
    return await node.auth.login(body.username, body.password, body.device)


@route(router, RefreshRequest)
async def refresh(body: RefreshRequest, node: NodeDep) -> Session:
    """Swap a refresh token for new tokens."""
    return await node.auth.refresh(body.refresh_token)


@route(router, LogoutRequest)
async def logout(_: LogoutRequest, node: NodeDep, principal: PrincipalDep) -> Ok:
    """End this device's session."""
    await node.auth.logout(principal)
    return Ok()


@route(router, WhoAmIRequest)
async def whoami(_: WhoAmIRequest, node: NodeDep, principal: PrincipalDep) -> Me:
    """The caller's account and device."""
    user = await node.users.get(principal.user_id)
    if user is None:
        raise Unauthorized("the account no longer exists")
    return Me(user=user, device_id=principal.device_id)
