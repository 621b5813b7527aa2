"""Profiles, friends and blocks, and the rules they put on direct messages."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from im_schema.errors import ErrorCode
from im_schema.events import FriendAddedNotice, FriendRemovedNotice, FriendRequestNotice
from im_schema.models import User
from im_schema.social import FriendInfo, FriendRequest

from ..bus.routes import NodeTable, RouteTable
from ..errors import BadRequest, Conflict, Forbidden, NotFound, RateLimited
from ..settings import Settings
from ..storage import UserStore
from ..storage._util import ms_to_datetime, now_ms
from ..storage.social import Friendship, RequestCooldown, SocialGraph, SocialStore
from .batching import Batcher
from .delivery import Deliverer
from .messaging import UserDirectory
from .ratelimit import RateLimiter

__all__ = ["SocialService"]

log = logging.getLogger(__name__)

Announce = Callable[[Iterable[int]], Awaitable[None]]


class SocialService:
    """Decides friend requests, friendships and blocks; caches each user's graph for the send path."""

    def __init__(
        self,
        settings: Settings,
        store: SocialStore,
        users: UserStore,
        directory: UserDirectory,
        deliverer: Deliverer,
        routes: RouteTable,
        nodes: NodeTable,
        *,
        size: int = 100_000,
        announce: Announce | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._users = users
        self._directory = directory
        self._deliverer = deliverer
        self._routes = routes
        self._nodes = nodes
        self._size = size
        self._graphs: OrderedDict[int, SocialGraph] = OrderedDict()
        self._loader: Batcher[int, SocialGraph] = Batcher(self._load)
        self._loading: set[int] = set()
        self._stale: set[int] = set()
        self._requests: RateLimiter[int] = RateLimiter(settings.friend_request_rate, settings.friend_request_burst)
        self.announce = announce
        """Tells the other API nodes whose graph changed (``None``: no other node to tell)."""

    # The send path -------------------------------------------------------------------------------

    async def graph(self, user_id: int) -> SocialGraph:
        """A user's friends and blocks (cached; misses that arrive together are read together)."""
        graph = self._graphs.get(user_id)
        if graph is None:
            return await self._loader.submit(user_id)
        self._graphs.move_to_end(user_id)
        return graph

    async def graphs(self, user_ids: Iterable[int]) -> dict[int, SocialGraph]:
        """Several users' graphs; the missing ones in one read."""
        found: dict[int, SocialGraph] = {}
        missing: list[int] = []
        for user_id in user_ids:
            graph = self._graphs.get(user_id)
            if graph is None:
                missing.append(user_id)
            else:
                self._graphs.move_to_end(user_id)
                found[user_id] = graph
        if missing:
            loaded = await asyncio.gather(*(self._loader.submit(user_id) for user_id in missing))
            found.update(zip(missing, loaded, strict=True))
        return found

    async def _load(self, user_ids: list[int]) -> list[SocialGraph]:
        # One run at a time (the batcher's rule): a graph forgotten while its read is under way is
        # returned to the callers that asked before the change, but not cached.
        self._loading = set(user_ids)
        self._stale = set()
        try:
            loaded = await self._store.graphs(self._loading)
        finally:
            stale, self._loading, self._stale = self._stale, set(), set()
        for user_id, graph in loaded.items():
            if user_id not in stale:
                self._graphs[user_id] = graph
        while len(self._graphs) > self._size:
            self._graphs.popitem(last=False)
        return [loaded[user_id] for user_id in user_ids]

    def forget(self, user_ids: Iterable[int]) -> None:
        """Drop cached graphs (they changed, here or on another node)."""
        for user_id in user_ids:
            self._graphs.pop(user_id, None)
            if user_id in self._loading:
                self._stale.add(user_id)

    async def check_direct(self, sender: int, recipient: int) -> None:
        """Raise unless ``sender`` may send ``recipient`` a direct message."""
        theirs = await self.graph(recipient)
        if sender in theirs.blocked:
            # Said the same way whatever the reason, so that a block cannot be told from a setting.
            raise Forbidden("this user does not accept your messages")
        if not self._settings.dm_requires_friendship or sender in theirs.friends or theirs.is_bot:
            return
        if (await self.graph(sender)).is_bot:
            return
        raise Forbidden("you can message this user once you are friends", code=ErrorCode.NOT_FRIENDS)

    def direct_allowed(self, sender: int, recipient: int) -> bool | None:
        """:meth:`check_direct` from cached graphs only: ``True`` allowed, ``False`` refused, ``None`` not
        cached (the send path then awaits :meth:`check_direct`, which also says why)."""
        theirs = self._graphs.get(recipient)
        if theirs is None:
            return None
        if sender in theirs.blocked:
            return False
        if not self._settings.dm_requires_friendship or sender in theirs.friends or theirs.is_bot:
            return True
        mine = self._graphs.get(sender)
        return None if mine is None else mine.is_bot

    async def _changed(self, *user_ids: int) -> None:
        self.forget(user_ids)
        if self.announce is not None:
            try:
                await self.announce(user_ids)
            except Exception as exc:
                log.warning("cannot announce a social change: %s", exc)

    def online(self, user_id: int) -> bool:
        """Whether any device of the user is connected to a live gateway."""
        return any(self._nodes.is_live(node) for node in self._routes.devices(user_id).values())

    # Profiles ------------------------------------------------------------------------------------

    async def update_profile(
        self, user_id: int, *, display_name: str | None, bio: str | None, avatar: str | None
    ) -> User:
        """Change my profile."""
        user = await self._users.update_profile(user_id, display_name=display_name, bio=bio, avatar=avatar)
        if user is None:
            raise NotFound("the account no longer exists", code=ErrorCode.USER_NOT_FOUND)
        return user

    # Friends -------------------------------------------------------------------------------------

    async def request(self, sender: int, target: int | str, message: str) -> FriendRequest:
        """Ask ``target`` to be my friend (or accept their standing request to me).

        Limited per user (``IM_FRIEND_REQUEST_RATE``), and a declined request cannot be repeated for
        ``IM_FRIEND_REQUEST_COOLDOWN``: both ``rate_limited`` with Retry-After.
        """
        wait = self._requests.acquire(sender)
        if wait:
            raise RateLimited("too many friend requests; slow down", retry_after=round(wait, 3))
        to_user = await self._directory.resolve(target)
        if to_user == sender:
            raise BadRequest("you cannot befriend yourself")
        mine = await self.graph(sender)
        if to_user in mine.friends:
            raise Conflict("you are friends already", code=ErrorCode.ALREADY_FRIENDS)
        theirs = await self.graph(to_user)
        try:
            status, request = await self._store.request_friend(
                sender, to_user, message, now=now_ms(), cooldown_ms=int(self._settings.friend_request_cooldown * 1000)
            )
        except RequestCooldown as exc:
            raise RateLimited(
                "this user declined your last request recently; you may ask again later",
                retry_after=float(max(1, -(-exc.wait_ms // 1000))),
            ) from None
        if status == "accepted":
            await self._changed(sender, to_user)
            await self._deliverer.notice([sender], FriendAddedNotice(user=request.from_user))
            await self._deliverer.notice([to_user], FriendAddedNotice(user=request.to_user))
        elif sender not in theirs.blocked:
            await self._deliverer.notice([to_user], FriendRequestNotice(request=request))
        return request

    async def requests(self, user_id: int, direction: str) -> list[FriendRequest]:
        """My pending requests, in or out."""
        return await self._store.requests(user_id, "outgoing" if direction == "outgoing" else "incoming")

    async def decide(self, user_id: int, request_id: int, accept: bool) -> FriendRequest:
        """Accept or decline a request sent to me."""
        request = await self._store.decide(request_id, user_id, accept, now=now_ms())
        if request is None:
            raise NotFound("no such pending request", code=ErrorCode.REQUEST_NOT_FOUND)
        if accept:
            await self._changed(request.from_user.id, request.to_user.id)
            await self._deliverer.notice([request.from_user.id], FriendAddedNotice(user=request.to_user))
            await self._deliverer.notice([request.to_user.id], FriendAddedNotice(user=request.from_user))
        return request

    def _info(self, friendship: Friendship) -> FriendInfo:
        return FriendInfo(
            user=friendship.user,
            remark=friendship.remark,
            online=self.online(friendship.user.id),
            since=ms_to_datetime(friendship.since),
        )

    async def friends(self, user_id: int) -> list[FriendInfo]:
        """My friends with my remarks and their online state."""
        return [self._info(friendship) for friendship in await self._store.friendships(user_id)]

    async def friend(self, user_id: int, target: int | str) -> FriendInfo:
        """One friend."""
        friend_id = await self._directory.resolve(target)
        found = await self._store.friendships(user_id, friend_id)
        if not found:
            raise NotFound("that user is not your friend")
        return self._info(found[0])

    async def set_remark(self, user_id: int, target: int | str, remark: str) -> FriendInfo:
        """My private remark for a friend."""
        friend_id = await self._directory.resolve(target)
        if not await self._store.set_remark(user_id, friend_id, remark or None):
            raise NotFound("that user is not your friend")
        return await self.friend(user_id, friend_id)

    async def remove(self, user_id: int, target: int | str) -> None:
        """End a friendship for both sides."""
        friend_id = await self._directory.resolve(target)
        if not await self._store.unfriend(user_id, friend_id):
            raise NotFound("that user is not your friend")
        await self._changed(user_id, friend_id)
        await self._deliverer.notice([friend_id], FriendRemovedNotice(user_id=user_id))
        await self._deliverer.notice([user_id], FriendRemovedNotice(user_id=friend_id))

    async def block(self, user_id: int, target: int | str) -> None:
        """Block a user."""
        blocked = await self._directory.resolve(target)
        if blocked == user_id:
            raise BadRequest("you cannot block yourself")
        await self._store.block(user_id, blocked, now=now_ms())
        await self._changed(user_id)

    async def unblock(self, user_id: int, target: int | str) -> None:
        """Lift a block."""
        blocked = await self._directory.resolve(target)
        if not await self._store.unblock(user_id, blocked):
            raise NotFound("that user is not blocked")
        await self._changed(user_id)

    async def blocked(self, user_id: int) -> list[User]:
        """Whom I blocked."""
        return await self._store.blocked(user_id)
