"""Cluster administration (``/v1/admin/...``): accounts, bot accounts, the cluster's nodes and routes.

Every route here answers ``403 forbidden`` unless the caller is an admin (checked in the service, from
the database, on each request). ``POST /v1/auth/bot``, where a bot trades its token for a session, is
open to anyone holding a token and throttled per client address like a password login.
"""

from __future__ import annotations

import logging

import httpx
from fastapi import APIRouter, Request

from im_schema.admin import (
    AdminUser,
    AdminUserList,
    BotCreated,
    BotList,
    BotLoginRequest,
    ClusterNode,
    ClusterNodes,
    ClusterNodesRequest,
    ClusterStats,
    ClusterStatsRequest,
    CreateBotRequest,
    DisableUserRequest,
    DrainRequest,
    EnableUserRequest,
    KickDeviceRequest,
    ListBotsRequest,
    ListUsersRequest,
    MakeAdminRequest,
    MessageTrace,
    RevokeBotRequest,
    ShowUserRequest,
    TraceMessageRequest,
    UserRoutes,
    UserRoutesRequest,
)
from im_schema.devices import LoggedOut
from im_schema.rest import Session

from ..contract import route
from ..deps import AdminDep, NodeDep, PrincipalDep
from .auth import _address

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["admin"])

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


@route(router, BotLoginRequest)
async def login_bot(body: BotLoginRequest, node: NodeDep, request: Request) -> Session:
    """Log a bot device in with its token (from ``im admin bots create``)."""
    return await node.auth.login_bot(body.token, body.device, address=_address(request))


@route(router, ListUsersRequest)
async def list_users(request: ListUsersRequest, admin: AdminDep, principal: PrincipalDep) -> AdminUserList:
    """Users in id order, ``limit`` after the id ``after`` (admins only)."""
    return await admin.users(principal, after=request.after, limit=request.limit)


@route(router, ShowUserRequest)
async def show_user(request: ShowUserRequest, admin: AdminDep, principal: PrincipalDep) -> AdminUser:
    """One user, with whether it is an admin and whether it is disabled (admins only)."""
    return await admin.show(principal, request.user)


@route(router, DisableUserRequest)
async def disable_user(request: DisableUserRequest, admin: AdminDep, principal: PrincipalDep) -> AdminUser:
    """Disable an account: it cannot log in, and its sessions end as on a logout (admins only)."""
    return await admin.disable(principal, request.user)


@route(router, EnableUserRequest)
async def enable_user(request: EnableUserRequest, admin: AdminDep, principal: PrincipalDep) -> AdminUser:
    """Let a disabled account log in again (admins only)."""
    return await admin.enable(principal, request.user)


@route(router, MakeAdminRequest)
async def make_admin(request: MakeAdminRequest, admin: AdminDep, principal: PrincipalDep) -> AdminUser:
    """Give a user the admin role (admins only)."""
    return await admin.make_admin(principal, request.user)


@route(router, CreateBotRequest)
async def create_bot(body: CreateBotRequest, admin: AdminDep, principal: PrincipalDep) -> BotCreated:
    """Create a bot account; the answer holds its token, shown this once (admins only)."""
    return await admin.create_bot(principal, body.username, body.display_name)


@route(router, ListBotsRequest)
async def list_bots(request: ListBotsRequest, admin: AdminDep, principal: PrincipalDep) -> BotList:
    """Every bot account (admins only)."""
    return await admin.bots(principal)


@route(router, RevokeBotRequest)
async def revoke_bot(request: RevokeBotRequest, admin: AdminDep, principal: PrincipalDep) -> LoggedOut:
    """Delete a bot's tokens and end its sessions (admins only)."""
    return await admin.revoke_bot(principal, request.bot)


@route(router, ClusterNodesRequest)
async def cluster_nodes(request: ClusterNodesRequest, admin: AdminDep, principal: PrincipalDep) -> ClusterNodes:
    """Live nodes from the registry's heartbeats, the most connections first (admins only)."""
    return await admin.nodes(principal)


@route(router, UserRoutesRequest)
async def cluster_routes(request: UserRoutesRequest, admin: AdminDep, principal: PrincipalDep) -> UserRoutes:
    """A user's connected devices and the gateway holding each (admins only)."""
    return await admin.routes(principal, request.user)


@route(router, ClusterStatsRequest)
async def cluster_stats(request: ClusterStatsRequest, node: NodeDep, principal: PrincipalDep) -> ClusterStats:
    """Cluster totals, with the NATS server's figures when ``IM_NATS_MONITOR_URL`` is set (admins only)."""
    await node.admin.require(principal)
    return await node.admin.stats(principal, await _nats_figures(node.settings.nats_monitor_url))


@route(router, KickDeviceRequest)
async def cluster_kick(body: KickDeviceRequest, admin: AdminDep, principal: PrincipalDep) -> LoggedOut:
    """End a user's device session (or all of them) as a logout does (admins only)."""
    return await admin.kick(principal, body.user, body.device)


@route(router, DrainRequest)
async def cluster_drain(body: DrainRequest, node: NodeDep, principal: PrincipalDep) -> ClusterNode:
    """Drain a gateway: no new clients, its clients reconnect elsewhere (4010), it stops once empty
    (admins only)."""
    return await node.admin.drain(principal, body.node)


@route(router, TraceMessageRequest)
async def cluster_trace(request: TraceMessageRequest, admin: AdminDep, principal: PrincipalDep) -> MessageTrace:
    """One message: stored when and by which API node, published to which gateways, pushed to which
    devices, read by whom (admins only; nodes remember their last ``IM_TRACE_CAPACITY`` messages)."""
    return await admin.trace(principal, request.conversation, request.seq)


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
