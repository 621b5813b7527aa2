"""Accounts and sessions."""

from __future__ import annotations

from fastapi import APIRouter, Request

from im_schema.models import User
from im_schema.rest import LoginRequest, LogoutRequest, Me, Ok, RefreshRequest, RegisterRequest, Session, WhoAmIRequest

from ...errors import Unauthorized
from ..contract import route
from ..deps import NodeDep, PrincipalDep

router = APIRouter(tags=["auth"])


def _address(request: Request) -> str:
    # Set by the entrance middleware (behind trusted proxies: the forwarded client).
    address = getattr(request.state, "client_address", None)
    if address is None:
        address = request.client.host if request.client else ""
    return str(address)


@route(router, RegisterRequest)
async def register(body: RegisterRequest, node: NodeDep, request: Request) -> User:
    """Create an account (a limited number per client address: ``rate_limited`` with Retry-After)."""
    return await node.auth.register(body.username, body.password, body.display_name, address=_address(request))


@route(router, LoginRequest)
async def login(body: LoginRequest, node: NodeDep, request: Request) -> Session:
    """Log a device in and get its tokens.

    Failed logins slow down: past a few failures, the account and the client address must wait
    (``rate_limited`` with Retry-After), doubling with each further failure.
    """
    return await node.auth.login(body.username, body.password, body.device, address=_address(request))


@route(router, RefreshRequest)
async def refresh(body: RefreshRequest, node: NodeDep) -> Session:
    """Swap a refresh token for new tokens (a token swapped before ends its session: reuse detection)."""
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
