"""After a message is sent: recall, edit, read state and receipts, typing and presence.

Recalls and edits are system messages with their own seq (devices that were offline learn them by
sync). Read positions, typing and presence are notices: pushed, never stored as messages, and only to
those allowed to see them: members of the conversation (typing), friends and fellow group members
(presence), never across a block in either direction.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from im_schema.errors import ErrorCode
from im_schema.events import PresenceNotice, ReadNotice, TypingNotice
from im_schema.ids import direct_users
from im_schema.lifecycle import Presence, Receipts
from im_schema.models import ReadState

from ..bus.routes import NodeTable, RouteTable
from ..errors import BadRequest, NotFound, RateLimited
from ..settings import Settings
from ..storage import MessageStore, Written
from ..storage._util import now_ms
from ..storage.groups import GroupStore
from .delivery import Deliverer
from .membership import MembershipCache
from .messaging import UserDirectory
from .ratelimit import RateLimiter
from .social import SocialService
from .sync import SyncService

__all__ = ["LifecycleService"]

log = logging.getLogger(__name__)


def _limit(limiter: RateLimiter[int], user_id: int, what: str) -> None:
    wait = limiter.acquire(user_id)
    if wait:
        raise RateLimited(f"too many {what}; slow down", retry_after=round(wait, 3))


class LifecycleService:
    """Recall, edit, read, receipts, typing, presence."""

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        groups: GroupStore,
        memberships: MembershipCache,
        sync: SyncService,
        social: SocialService,
        directory: UserDirectory,
        deliverer: Deliverer,
        routes: RouteTable,
        nodes: NodeTable,
    ) -> None:
        self._settings = settings
        self._store = store
        self._groups = groups
        self._memberships = memberships
        self._sync = sync
        self._social = social
        self._directory = directory
        self._deliverer = deliverer
        self._routes = routes
        self._nodes = nodes
        self._typing: RateLimiter[tuple[int, str]] = RateLimiter(1 / settings.typing_interval, 1)
        # Per user, whatever the conversation: edits and recalls each write a system message that
        # every member receives, and typing notices (start and stop alike) fan out to members.
        self._edits: RateLimiter[int] = RateLimiter(settings.edit_rate, settings.edit_burst)
        self._recalls: RateLimiter[int] = RateLimiter(settings.recall_rate, settings.recall_burst)
        self._typing_notices: RateLimiter[int] = RateLimiter(settings.typing_rate, settings.typing_burst)
        self._presence: RateLimiter[int] = RateLimiter(0.2, 5)

    # Recall and edit -----------------------------------------------------------------------------

    async def recall(self, user_id: int, conversation: str, seq: int) -> Written:
        """Recall a message; everyone learns it from a ``message_recalled`` system message."""
        _limit(self._recalls, user_id, "recalls")
        recalled, notice = await self._store.recall(
            conversation, seq, user_id, window_ms=int(self._settings.recall_window * 1000), now=now_ms()
        )
        if notice is not None:
            await self._deliverer.written(notice)
        return recalled

    async def edit(self, user_id: int, conversation: str, seq: int, text: str) -> Written:
        """Replace the text of my message; everyone learns it from a ``message_edited`` system message."""
        _limit(self._edits, user_id, "edits")
        if len(text) > self._settings.max_text_len:
            raise BadRequest(
                f"text is longer than {self._settings.max_text_len} characters", code=ErrorCode.TEXT_TOO_LONG
            )
        edited, notice = await self._store.edit(
            conversation, seq, user_id, text, window_ms=int(self._settings.edit_window * 1000), now=now_ms()
        )
        await self._deliverer.written(notice)
        return edited

    # Read state ----------------------------------------------------------------------------------

    async def mark_read(self, user_id: int, device_id: str | None, conversation: str, seq: int) -> ReadState:
        """Move my read position; my other devices and (in a direct conversation) my peer are told."""
        state = await self._sync.mark_read(user_id, conversation, seq)
        notice = ReadNotice(conversation=conversation, user_id=user_id, read_seq=state.read_seq)
        skip = (user_id, device_id) if device_id is not None else None
        await self._deliverer.notice([user_id], notice, skip=skip)
        if conversation.startswith("d:"):
            peer = next(user for user in direct_users(conversation) if user != user_id)
            await self._deliverer.notice([peer], notice)
        return state

    async def receipts(self, user_id: int, conversation: str, seq: int) -> Receipts:
        """Who has read a message and who has not (for members who could see it)."""
        member = await self._store.member(conversation, user_id)
        if member is None or seq <= member.joined_seq or (member.left_seq is not None and seq > member.left_seq):
            raise NotFound("no such message", code=ErrorCode.NOT_FOUND)
        found = await self._store.receipts(conversation, seq)
        if found is None:
            raise NotFound("no such message", code=ErrorCode.NOT_FOUND)
        _, read, unread = found
        return Receipts(conversation=conversation, seq=seq, read=read, unread=unread)

    # Typing --------------------------------------------------------------------------------------

    async def _members(self, conversation: str) -> list[int]:
        if conversation.startswith("d:"):
            return list(direct_users(conversation))
        return await self._memberships.recipients(conversation, 2**62, 0)

    async def _visible_to(self, subject: int, viewers: list[int]) -> list[int]:
        """The viewers who may see ``subject``'s typing or presence: no block either way."""
        mine = await self._social.graph(subject)
        candidates = [viewer for viewer in viewers if viewer != subject and viewer not in mine.blocked]
        theirs = await self._social.graphs(candidates)  # the uncached ones in one read
        return [viewer for viewer in candidates if subject not in theirs[viewer].blocked]

    async def typing(self, user_id: int, conversation: str, active: bool) -> None:
        """Tell the other members I am typing (at most once per interval per conversation; starts and stops
        both count against the user's typing rate, past which ``rate_limited``)."""
        _limit(self._typing_notices, user_id, "typing notices")
        members = await self._members(conversation)
        if user_id not in members:
            raise NotFound("the conversation does not exist", code=ErrorCode.CONVERSATION_NOT_FOUND)
        if active and self._typing.acquire((user_id, conversation)):
            return  # said recently: the others still show it
        if len(members) > self._settings.typing_max_group:
            return
        viewers = await self._visible_to(user_id, members)
        await self._deliverer.notice(viewers, TypingNotice(conversation=conversation, user_id=user_id, active=active))

    # Presence ------------------------------------------------------------------------------------

    def _state(self, user_id: int) -> tuple[bool, datetime | None]:
        online = any(self._nodes.is_live(node) for node in self._routes.devices(user_id).values())
        seen = self._routes.last_seen(user_id)
        return online, datetime.fromtimestamp(seen, UTC) if seen is not None and not online else None

    async def presence(self, viewer: int, target: int | str) -> Presence:
        """A user's presence, for friends and fellow group members (never across a block)."""
        subject = await self._directory.resolve(target)
        allowed = subject == viewer or (
            await self._visible_to(subject, [viewer])
            and (
                viewer in (await self._social.graph(subject)).friends
                or await self._groups.share_a_group(viewer, subject)
            )
        )
        if not allowed:
            raise NotFound("no presence to show for that user", code=ErrorCode.NOT_FOUND)
        online, seen = self._state(subject)
        return Presence(user_id=subject, online=online, last_seen=seen)

    async def device_changed(self, user_id: int, device_id: str, online: bool) -> None:
        """A gateway says a device connected or disconnected: tell the friends when the user as a whole
        comes online or goes offline."""
        others = any(
            self._nodes.is_live(node) for device, node in self._routes.devices(user_id).items() if device != device_id
        )
        if online is False and others:
            return  # still online on another device
        if self._presence.acquire(user_id):
            return  # flapping: friends will see the state at the next change or by asking
        friends = sorted((await self._social.graph(user_id)).friends)
        viewers = await self._visible_to(user_id, friends)
        seen = None if online else datetime.now(UTC)
        await self._deliverer.notice(viewers, PresenceNotice(user_id=user_id, online=online, last_seen=seen))
