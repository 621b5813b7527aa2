"""Cluster administration for admins: accounts, bot accounts, and a view of the cluster's nodes.

Every method but the bootstrap ones takes the calling :class:`Principal` and first checks that it is an
admin (:meth:`AdminService.require`), else ``403 forbidden``; the admin flag is read from the database
on each call, so that a change takes effect at once on every node. Disabling an account, revoking a bot
and kicking a device all end sessions through :meth:`DeviceService.end_user`, the path a logout takes:
tokens refused on every node, live connections closed with 4012.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from im_schema.admin import (
    TRACE_LIST_MAX,
    AdminUser,
    AdminUserList,
    BotCreated,
    BotList,
    ClusterNode,
    ClusterNodes,
    ClusterStats,
    DeviceRoute,
    MessageTrace,
    TraceNode,
    TracePush,
    UserRoutes,
)
from im_schema.devices import LoggedOut
from im_schema.errors import ErrorCode
from im_schema.models import User

from ..bus.routes import NodeInfo, NodeTable, RouteTable
from ..cluster.drain import DRAIN
from ..cluster.trace import NodeTrace
from ..errors import Conflict, Forbidden, NotFound
from ..storage import UsernameTaken
from ..storage._util import ms_to_datetime, now_ms
from ..storage.admin import AdminStore
from .auth import Principal, bot_token_hash
from .devices import DeviceService

__all__ = ["BOT_TOKEN_PREFIX", "AdminService", "bootstrap_admin", "new_bot_token"]

BOT_TOKEN_PREFIX = "imbot_"
"""Bot tokens start with this, so that a leaked one is recognisable (secret scanners, logs)."""

UNUSABLE_PASSWORD = "!bot"
"""The password hash of a bot account: no password verifies against it (not an Argon2 hash)."""


def new_bot_token() -> str:
    """A fresh bot token: the prefix and 256 random bits."""
    return BOT_TOKEN_PREFIX + secrets.token_urlsafe(32)


class AdminService:
    """What ``/v1/admin`` does; every method checks the caller is an admin first."""

    def __init__(
        self,
        store: AdminStore,
        devices: DeviceService,
        routes: RouteTable,
        nodes: NodeTable,
        *,
        publish: Callable[[str, bytes], Awaitable[None]] | None = None,
        gather: Callable[[str, int, list[str]], Awaitable[list[NodeTrace]]] | None = None,
    ) -> None:
        self._publish = publish
        """Sends a control message to one gateway node's subject (the drain)."""
        self._gather = gather
        """Asks every live node for its trace record of a message (:func:`im_server.cluster.trace.gather`)."""
        self._store = store
        self._devices = devices
        self._routes = routes
        self._nodes = nodes

    async def require(self, principal: Principal) -> None:
        """Raise ``forbidden`` unless the caller is an admin whose account is enabled."""
        state = await self._store.login_state(principal.user_id)
        if state is None or not state.is_admin or state.disabled:
            raise Forbidden("only cluster admins may do this")

    async def _found(self, user: int | str) -> AdminUser:
        found = await self._store.get(user)
        if found is None:
            raise NotFound(f"no user {user!r}", code=ErrorCode.USER_NOT_FOUND)
        return found

    # Accounts -------------------------------------------------------------------------------------

    async def users(self, principal: Principal, *, after: int, limit: int) -> AdminUserList:
        """A page of users in id order."""
        await self.require(principal)
        page = await self._store.page(after=after, limit=limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return AdminUserList(users=page, next_after=page[-1].id if more and page else None)

    async def show(self, principal: Principal, user: int | str) -> AdminUser:
        """One user with the admin columns."""
        await self.require(principal)
        return await self._found(user)

    async def disable(self, principal: Principal, user: int | str) -> AdminUser:
        """Disable an account and end every session it has; an admin cannot disable itself."""
        await self.require(principal)
        target = await self._found(user)
        if target.id == principal.user_id:
            raise Forbidden("you cannot disable your own account")
        updated = await self._store.set_disabled(target.id, now_ms())
        await self._devices.end_user(target.id)
        assert updated is not None
        return updated

    async def enable(self, principal: Principal, user: int | str) -> AdminUser:
        """Let a disabled account log in again."""
        await self.require(principal)
        target = await self._found(user)
        updated = await self._store.set_disabled(target.id, None)
        assert updated is not None
        return updated

    async def make_admin(self, principal: Principal, user: int | str) -> AdminUser:
        """Give a user the admin role."""
        await self.require(principal)
        target = await self._found(user)
        updated = await self._store.set_admin(target.id, True)
        assert updated is not None
        return updated

    # Bots -----------------------------------------------------------------------------------------

    async def create_bot(self, principal: Principal, username: str, display_name: str | None) -> BotCreated:
        """A bot account and its token (returned this once)."""
        await self.require(principal)
        token = new_bot_token()
        try:
            bot = await self._store.create_bot(
                username, UNUSABLE_PASSWORD, display_name or username, bot_token_hash(token), now=now_ms()
            )
        except UsernameTaken:
            raise Conflict(f"the username {username!r} is taken", code=ErrorCode.USERNAME_TAKEN) from None
        return BotCreated(user=bot, token=token)

    async def bots(self, principal: Principal) -> BotList:
        """Every bot account."""
        await self.require(principal)
        return BotList(bots=await self._store.bots())

    async def revoke_bot(self, principal: Principal, bot: int | str) -> LoggedOut:
        """Delete the bot's tokens and end its sessions."""
        await self.require(principal)
        target = await self._found(bot)
        if not target.is_bot:
            raise NotFound(f"{target.username!r} is not a bot", code=ErrorCode.USER_NOT_FOUND)
        await self._store.revoke_tokens(target.id)
        return LoggedOut(devices=list(await self._devices.end_user(target.id)), current=False)

    # Cluster --------------------------------------------------------------------------------------

    async def nodes(self, principal: Principal) -> ClusterNodes:
        """Live nodes from the registry, the most connections first."""
        await self.require(principal)
        nodes = [_node(info) for info in self._nodes.live()]
        nodes.sort(key=lambda node: (-node.connections, node.node_id))
        return ClusterNodes(nodes=nodes)

    async def routes(self, principal: Principal, user: int | str) -> UserRoutes:
        """A user's connected devices and the nodes holding them."""
        await self.require(principal)
        target = await self._found(user)
        routes = [
            DeviceRoute(device_id=device, node_id=node, live=self._nodes.is_live(node))
            for device, node in sorted(self._routes.devices(target.id).items())
        ]
        return UserRoutes(user=User.model_validate(target.model_dump(include=set(User.model_fields))), routes=routes)

    async def stats(self, principal: Principal, nats: dict[str, object] | None = None) -> ClusterStats:
        """Cluster totals; ``nats`` is the NATS server's own figures, when known."""
        await self.require(principal)
        live = self._nodes.live()
        return ClusterStats(
            nodes=len(live),
            api_nodes=sum(1 for info in live if info.role != "gateway"),
            gateway_nodes=sum(1 for info in live if info.role == "gateway"),
            connections=sum(info.connections for info in live if info.role == "gateway"),
            routes=len(self._routes),
            users=await self._store.count_users(),
            nats=nats,
        )

    async def drain(self, principal: Principal, node_id: str, *, wait: float = 5.0) -> ClusterNode:
        """Ask a live gateway node to drain; returns it once the registry shows it draining (or after
        ``wait`` seconds, as last seen)."""
        await self.require(principal)
        info = next((item for item in self._nodes.live("gateway") if item.node_id == node_id), None)
        if info is None or self._publish is None:
            raise NotFound(f"no live gateway node {node_id!r} (see im cluster nodes)")
        await self._publish(node_id, DRAIN)
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while info.state != "draining" and loop.time() < until:
            await asyncio.sleep(0.05)
            current = next((item for item in self._nodes.live("gateway") if item.node_id == node_id), None)
            # Gone from the registry: it had no client left and already stopped.
            info = current or dataclasses.replace(info, state="draining", connections=0)
        return _node(info)

    async def kick(self, principal: Principal, user: int | str, device: str | None) -> LoggedOut:
        """End one device session of a user, or all of them, as a logout does."""
        await self.require(principal)
        target = await self._found(user)
        ended = await self._devices.end_user(target.id, device)
        if device is not None and not ended:
            raise NotFound(f"{target.username!r} has no device {device!r} logged in", code=ErrorCode.DEVICE_NOT_FOUND)
        return LoggedOut(devices=list(ended), current=principal.user_id == target.id and principal.device_id in ended)

    async def trace(self, principal: Principal, conversation: str, seq: int) -> MessageTrace:
        """One message's way through the cluster: storage's row and readers, and every live node's record."""
        await self.require(principal)
        stored = await self._store.stored_message(conversation, seq, TRACE_LIST_MAX)
        if stored is None:
            raise NotFound(f"no message {seq} in {conversation}", code=ErrorCode.NOT_FOUND)
        # Roles come from the registry (each node writes only its own heartbeat), not from the answers;
        # an answer naming a node that is not live is ignored.
        roles = {info.node_id: info.role for info in self._nodes.live()}
        live = sorted(roles)
        answers = await self._gather(conversation, seq, live) if self._gather is not None else []
        answers = [answer for answer in answers if answer.node_id in roles]
        nodes: list[TraceNode] = []
        aged_out: list[str] = []
        started_later: list[str] = []
        stored_by = None
        for answer in answers:
            record = answer.record
            if record is None:
                if answer.since > stored.created_at:
                    (aged_out if answer.evicted else started_later).append(answer.node_id)
                continue
            node = _trace_node(answer.node_id, roles[answer.node_id], record)
            if node is None:
                continue
            if node.role == "api" and node.stored_at is not None:
                stored_by = node.node_id
            nodes.append(node)
        answered = {answer.node_id for answer in answers}
        return MessageTrace(
            conversation=conversation,
            seq=seq,
            sender=stored.sender,
            client_msg_id=stored.client_msg_id,
            sent_at=ms_to_datetime(stored.created_at),
            stored_by=stored_by,
            nodes=nodes,
            aged_out=aged_out,
            started_later=started_later,
            silent=sorted(node for node in live if node not in answered),
            read=stored.read,
            unread=stored.unread,
            read_count=stored.read_count,
            unread_count=stored.unread_count,
        )


def _trace_node(node_id: str, role: str, record: dict[str, Any]) -> TraceNode | None:
    """A node's answer as a :class:`TraceNode` (``None`` if malformed: nodes are trusted, their bytes are not)."""

    def at(value: object) -> datetime.datetime | None:
        return ms_to_datetime(value) if type(value) is int and 0 <= value < 2**48 else None

    try:
        pushes = [
            TracePush(user_id=user, device_id=str(device), kind=kind, at=ms_to_datetime(when))
            for user, device, kind, when in record.get("pushes") or []
        ]
        if role == "gateway":  # a gateway stores and publishes nothing; an API node pushes nothing
            return TraceNode(node_id=node_id, role="gateway", pushes=pushes, pushed=int(record.get("pushed") or 0))
        return TraceNode(
            node_id=node_id,
            role="api",
            stored_at=at(record.get("stored_at")),
            published=dict(record.get("published") or {}),
            published_at=at(record.get("published_at")),
        )
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _node(info: NodeInfo) -> ClusterNode:
    return ClusterNode(
        node_id=info.node_id,
        role="gateway" if info.role == "gateway" else "api",
        address=info.url or "",
        connections=info.connections,
        uptime=max(0.0, now_ms() / 1000 - info.started_at),
        version=info.version,
        state="draining" if info.state == "draining" else "serving",
        live=True,
        frames_in=None if info.frames_in is None else int(info.frames_in),
        frames_out=None if info.frames_out is None else int(info.frames_out),
        frames_in_per_s=info.frames_in_rate,
        frames_out_per_s=info.frames_out_rate,
    )


async def bootstrap_admin(db_url: str, username: str, password: str | None) -> tuple[AdminUser, bool]:
    """Make ``username`` an admin straight in the database (``im server create-admin``, on the server).

    The account is created with ``password`` if it does not exist (``password`` is then required), else
    the existing account is made an admin and keeps its password. The database is migrated first.
    Returns the user and whether it was created. Raises :class:`ValueError` on a bad name or password.
    """
    from argon2 import PasswordHasher
    from pydantic import TypeAdapter, ValidationError

    from im_schema.ids import Username
    from im_schema.rest import Password

    from ..settings import Settings
    from ..storage import Database, UserStore

    try:
        username = TypeAdapter(Username).validate_python(username)
        if password is not None:
            password = TypeAdapter(Password).validate_python(password)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None
    db = Database(db_url)
    try:
        await db.migrate()
        store = AdminStore(db)
        existing = await store.get(username)
        created = existing is None
        if created:
            if password is None:
                raise ValueError(f"there is no user {username!r}; give a password to create it")
            defaults = Settings.model_fields
            hasher = PasswordHasher(
                time_cost=defaults["argon2_time_cost"].default,
                memory_cost=defaults["argon2_memory_cost"].default,
                parallelism=defaults["argon2_parallelism"].default,
            )
            try:
                await UserStore(db).create_user(username, hasher.hash(password), username, now=now_ms())
            except UsernameTaken:
                created = False  # registered meanwhile: make that account an admin
        user = await store.set_admin(username, True)
        assert user is not None
        return user, created
    finally:
        await db.close()
