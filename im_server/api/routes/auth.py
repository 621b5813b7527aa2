"""Accounts and sessions."""

from __future__ import annotations

from fastapi import APIRouter, status

from im_schema.models import User
from im_schema.rest import LoginRequest, Me, Ok, RefreshRequest, RegisterRequest, Session

from ...errors import Unauthorized
from ..deps import NodeDep, PrincipalDep

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=User)
async def register(body: RegisterRequest, node: NodeDep) -> User:
    """Create an account."""
    return await node.auth.register(body.username, body.password, body.display_name)


@router.post("/auth/login", response_model=Session)
async def login(body: LoginRequest, node: NodeDep) -> Session:
    """Log a device in and get its tokens."""
    return await node.auth.login(body.username, body.password, body.device)


@router.post("/auth/refresh", response_model=Session)
async def refresh(body: RefreshRequest, node: NodeDep) -> Session:
    """Swap a refresh token for new tokens."""
    return await node.auth.refresh(body.refresh_token)


@router.post("/auth/logout", response_model=Ok)
async def logout(node: NodeDep, principal: PrincipalDep) -> Ok:
    """End this device's session."""
    await node.auth.logout(principal)
    return Ok()


@router.get("/me", response_model=Me)
async def whoami(node: NodeDep, principal: PrincipalDep) -> Me:
    """The caller's account and device."""
    user = await node.users.get(principal.user_id)
    if user is None:
        raise Unauthorized("the account no longer exists")
    return Me(user=user, device_id=principal.device_id)
