"""Cluster administration (``/v1/admin/...``): accounts, bot accounts, the cluster's nodes and routes.

Every route here answers ``403 forbidden`` unless the caller is an admin (checked in the service, from
the database, on each request). ``POST /v1/auth/bot``, where a bot trades its token for a session, is
open to anyone holding a token and throttled per client address like a password login.
"""

from __future__ import annotations

import logging

import httpx
from fastapi import APIRouter, Request, status

from im_schema.admin import (
    AdminUser,
    AdminUserList,
    BotCreated,
    BotList,
    BotLoginRequest,
    ClusterNode,
    ClusterNodes,
    ClusterStats,
    CreateBotRequest,
    DisableUserRequest,
    DrainRequest,
    EnableUserRequest,
    KickRequest,
    ListUsersRequest,
    MakeAdminRequest,
    RevokeBotRequest,
    ShowUserRequest,
    UserRoutes,
    UserRoutesRequest,
)
from im_schema.devices import LoggedOut
from im_schema.rest import Session

from ..deps import NodeDep, PrincipalDep, parse
from .auth import _address

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["admin"])

NATS_FIGURES = (
    "server_id",
    "version",
    "uptime",
    "connections",
    "total_connections",
    "subscriptions",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "slow_consumers",
    "mem",
    "cpu",
)
"""What ``stats`` keeps of the NATS server's ``/varz`` (the rest is configuration)."""


def _user(value: str) -> int | str:
    return int(value) if value.isdigit() else value


@router.post("/auth/bot", response_model=Session)
async def login_bot(body: BotLoginRequest, node: NodeDep, request: Request) -> Session:
    """Log a bot device in with its token (from ``im admin bots create``)."""
    return await node.auth.login_bot(body.token, body.device, address=_address(request))


@router.get("/admin/users", response_model=AdminUserList)
async def list_users(node: NodeDep, principal: PrincipalDep, after: int = 0, limit: int = 100) -> AdminUserList:
    """Users in id order, ``limit`` after the id ``after`` (admins only)."""
    request = parse(ListUsersRequest, after=after, limit=limit)
    return await node.admin.users(principal, after=request.after, limit=request.limit)


@router.get("/admin/users/{user}", response_model=AdminUser)
async def show_user(user: str, node: NodeDep, principal: PrincipalDep) -> AdminUser:
    """One user, with whether it is an admin and whether it is disabled (admins only)."""
    request = parse(ShowUserRequest, user=_user(user))
    return await node.admin.show(principal, request.user)


@router.post("/admin/users/{user}/disable", response_model=AdminUser)
async def disable_user(user: str, node: NodeDep, principal: PrincipalDep) -> AdminUser:
    """Disable an account: it cannot log in, and its sessions end as on a logout (admins only)."""
    request = parse(DisableUserRequest, user=_user(user))
    return await node.admin.disable(principal, request.user)


@router.post("/admin/users/{user}/enable", response_model=AdminUser)
async def enable_user(user: str, node: NodeDep, principal: PrincipalDep) -> AdminUser:
    """Let a disabled account log in again (admins only)."""
    request = parse(EnableUserRequest, user=_user(user))
    return await node.admin.enable(principal, request.user)


@router.post("/admin/users/{user}/make-admin", response_model=AdminUser)
async def make_admin(user: str, node: NodeDep, principal: PrincipalDep) -> AdminUser:
    """Give a user the admin role (admins only)."""
    request = parse(MakeAdminRequest, user=_user(user))
    return await node.admin.make_admin(principal, request.user)


@router.post("/admin/bots", status_code=status.HTTP_201_CREATED, response_model=BotCreated)
async def create_bot(body: CreateBotRequest, node: NodeDep, principal: PrincipalDep) -> BotCreated:
    """Create a bot account; the answer holds its token, shown this once (admins only)."""
    return await node.admin.create_bot(principal, body.username, body.display_name)


@router.get("/admin/bots", response_model=BotList)
async def list_bots(node: NodeDep, principal: PrincipalDep) -> BotList:
    """Every bot account (admins only)."""
    return await node.admin.bots(principal)


@router.delete("/admin/bots/{bot}", response_model=LoggedOut)
async def revoke_bot(bot: str, node: NodeDep, principal: PrincipalDep) -> LoggedOut:
    """Delete a bot's tokens and end its sessions (admins only)."""
    request = parse(RevokeBotRequest, bot=_user(bot))
    return await node.admin.revoke_bot(principal, request.bot)


@router.get("/admin/cluster/nodes", response_model=ClusterNodes)
async def cluster_nodes(node: NodeDep, principal: PrincipalDep) -> ClusterNodes:
    """Live nodes from the registry's heartbeats, the most connections first (admins only)."""
    return await node.admin.nodes(principal)


@router.get("/admin/cluster/routes/{user}", response_model=UserRoutes)
async def cluster_routes(user: str, node: NodeDep, principal: PrincipalDep) -> UserRoutes:
    """A user's connected devices and the gateway holding each (admins only)."""
    request = parse(UserRoutesRequest, user=_user(user))
    return await node.admin.routes(principal, request.user)


@router.get("/admin/cluster/stats", response_model=ClusterStats)
async def cluster_stats(node: NodeDep, principal: PrincipalDep) -> ClusterStats:
    """Cluster totals, with the NATS server's figures when ``IM_NATS_MONITOR_URL`` is set (admins only)."""
    await node.admin.require(principal)
    return await node.admin.stats(principal, await _nats_figures(node.settings.nats_monitor_url))


@router.post("/admin/cluster/kick", response_model=LoggedOut)
async def cluster_kick(body: KickRequest, node: NodeDep, principal: PrincipalDep) -> LoggedOut:
    """End a user's device session (or all of them) as a logout does (admins only)."""
    return await node.admin.kick(principal, body.user, body.device)


@router.post("/admin/cluster/drain", response_model=ClusterNode)
async def cluster_drain(body: DrainRequest, node: NodeDep, principal: PrincipalDep) -> ClusterNode:
    """Drain a gateway: no new clients, its clients reconnect elsewhere (4010), it stops once empty
    (admins only)."""
    return await node.admin.drain(principal, body.node)


async def _nats_figures(url: str | None) -> dict[str, object] | None:
    if not url:
        return None
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(url.rstrip("/") + "/varz")
            response.raise_for_status()
            varz = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        # The figures are a courtesy: the cluster's own totals are answered without them.
        log.warning("cannot read the NATS monitoring endpoint %s: %r", url, exc)
        return {"error": f"cannot read {url}/varz"}
    return {key: varz[key] for key in NATS_FIGURES if key in varz}
