"""The typed events a bot's ``on_event`` handlers receive, bound to the bot.

Besides the SDK's own events (:class:`~im_sdk.events.RecallEvent`, :class:`~im_sdk.events.EditEvent`,
:class:`~im_sdk.events.ReadEvent`, :class:`~im_sdk.events.TypingEvent`,
:class:`~im_sdk.events.PresenceEvent`, and :class:`~im_sdk.events.NoticeEvent` for notices not named
here), a bot sees:

- :class:`FriendRequest` (``await event.accept()``), :class:`GroupInvitation` (``accept``/``decline``),
  :class:`JoinRequest` (``approve``/``reject``), :class:`FriendAdded`, :class:`FriendRemoved`;
- :class:`ButtonPress`: a member pressed a button of one of the bot's messages (``await
  event.answer(text)`` writes into that conversation);
- group changes, which are system messages: :class:`MembersJoined`, :class:`MemberLeft` (left or
  kicked), and :class:`GroupChanged` for the others (created, renamed, announcement, ...), each with
  ``await event.answer(text)`` to write into the group.

:func:`bot_event` turns an SDK event into the bot's; it is pure apart from the binding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from im_schema.buttons import Button
from im_schema.content import SystemContent, SystemEvent
from im_schema.events import (
    FriendAddedNotice,
    FriendRemovedNotice,
    FriendRequestNotice,
    GroupInvitationNotice,
    JoinRequestNotice,
)
from im_schema.groups import GroupInvitation as GroupInvitationModel
from im_schema.groups import JoinRequest as JoinRequestModel
from im_schema.models import Message, User
from im_schema.social import FriendInfo
from im_schema.social import FriendRequest as FriendRequestModel

from ..events import ButtonPressEvent, Event, MessageEvent, NoticeEvent, _AboutMessage

if TYPE_CHECKING:
    from .bot import Bot

__all__ = [
    "ButtonPress",
    "FriendAdded",
    "FriendRemoved",
    "FriendRequest",
    "GroupChanged",
    "GroupInvitation",
    "JoinRequest",
    "MemberLeft",
    "MembersJoined",
    "bot_event",
]


@dataclass(frozen=True)
class FriendRequest:
    """Someone asked the bot to be friends (direct messages need friendship on a default server)."""

    request: FriendRequestModel
    _bot: Bot = field(repr=False, compare=False)

    @property
    def user(self) -> User:
        """Who asked."""
        return self.request.from_user

    async def accept(self) -> FriendInfo:
        """Become friends."""
        return await self._bot.client.friends.accept(self.request.id)

    async def decline(self) -> None:
        """Say no."""
        await self._bot.client.friends.decline(self.request.id)


@dataclass(frozen=True)
class ButtonPress(ButtonPressEvent):
    """A member pressed a button of one of the bot's messages: the SDK's
    :class:`~im_sdk.events.ButtonPressEvent` (``conversation``, ``seq``, ``button``, ``user_id``), bound to the
    bot.

    Presses wait on the server until handled: the bot acknowledges each one after its handler
    finished, and lists those it missed after every (re)connect, so a press is handled even if the bot
    was offline when it happened (and its handler's sends are idempotent, as for messages).
    """

    _bot: Bot = field(repr=False, compare=False)

    async def answer(
        self, text: str, *, quote: bool = True, buttons: Sequence[Button | tuple[str, str]] | None = None
    ) -> Message:
        """Write into the conversation (quoting the pressed message unless ``quote=False``); an
        idempotent send when called from a handler."""
        return await self._bot.send_text(self.conversation, text, reply_to=self.seq if quote else None, buttons=buttons)


@dataclass(frozen=True)
class FriendAdded:
    """A friendship began."""

    user: User


@dataclass(frozen=True)
class FriendRemoved:
    """A friendship ended."""

    user_id: int


@dataclass(frozen=True)
class GroupInvitation:
    """The bot was invited to a group (an invitation whose ``status`` is not ``pending`` was answered
    elsewhere, or withdrawn)."""

    invitation: GroupInvitationModel
    _bot: Bot = field(repr=False, compare=False)

    @property
    def pending(self) -> bool:
        """Whether it still waits for an answer."""
        return self.invitation.status == "pending"

    async def accept(self) -> None:
        """Join the group."""
        await self._bot.client.groups.accept(self.invitation.id)

    async def decline(self) -> None:
        """Do not join."""
        await self._bot.client.groups.decline(self.invitation.id)


@dataclass(frozen=True)
class JoinRequest:
    """Someone asked to join a group the bot administers."""

    request: JoinRequestModel
    _bot: Bot = field(repr=False, compare=False)

    async def approve(self) -> None:
        """Let them in."""
        await self._bot.client.groups.approve(self.request.group_id, self.request.id)

    async def reject(self) -> None:
        """Turn them away."""
        await self._bot.client.groups.reject(self.request.group_id, self.request.id)


@dataclass(frozen=True)
class _GroupEvent(_AboutMessage):
    message: Message
    """The system message that announced it (it has its own seq in the group: :attr:`seq`, in
    :attr:`conversation`)."""
    _bot: Bot = field(repr=False, compare=False)

    @property
    def content(self) -> SystemContent:
        """What the server said."""
        content = self.message.content
        assert isinstance(content, SystemContent)
        return content

    @property
    def actor(self) -> int | None:
        """Who did it."""
        return self.content.actor

    async def answer(self, text: str, **kwargs: Any) -> Message:
        """Write into the group (an idempotent send when called from a handler)."""
        return await self._bot.send_text(self.conversation, text, **kwargs)


@dataclass(frozen=True)
class MembersJoined(_GroupEvent):
    """Users joined a group the bot is in (added, invitation accepted, join request approved); the
    creation of a group is a :class:`GroupChanged` (``group_created``)."""

    users: tuple[int, ...] = ()


@dataclass(frozen=True)
class MemberLeft(_GroupEvent):
    """A member left a group the bot is in, or was kicked (``kicked``)."""

    user: int = 0
    kicked: bool = False


@dataclass(frozen=True)
class GroupChanged(_GroupEvent):
    """Any other group change (``event``: ``group_created``, ``group_updated``, ``announcement_set``,
    ``group_dissolved``, ``owner_transferred``, ``member_muted``...)."""

    event: str = ""


def _ints(value: object) -> tuple[int, ...]:
    return tuple(item for item in value if isinstance(item, int)) if isinstance(value, list) else ()


def bot_event(event: Event[Any], bot: Bot) -> object:
    """The bot's view of an SDK event (unchanged when the bot has nothing more specific)."""
    if isinstance(event, ButtonPressEvent):
        return ButtonPress(event.press, bot)
    if isinstance(event, NoticeEvent):
        notice = event.notice
        if isinstance(notice, FriendRequestNotice):
            return FriendRequest(notice.request, bot)
        if isinstance(notice, GroupInvitationNotice):
            return GroupInvitation(notice.invitation, bot)
        if isinstance(notice, JoinRequestNotice):
            return JoinRequest(notice.request, bot)
        if isinstance(notice, FriendAddedNotice):
            return FriendAdded(notice.user)
        if isinstance(notice, FriendRemovedNotice):
            return FriendRemoved(notice.user_id)
        return event
    if isinstance(event, MessageEvent):
        content = event.message.content
        if isinstance(content, SystemContent):
            data = content.data
            if content.event == SystemEvent.MEMBERS_JOINED:
                return MembersJoined(event.message, bot, _ints(data.get("users")))
            if content.event in (SystemEvent.MEMBER_LEFT, SystemEvent.MEMBER_KICKED):
                user = data.get("user")
                return MemberLeft(
                    event.message, bot, user if isinstance(user, int) else 0, content.event == SystemEvent.MEMBER_KICKED
                )
            return GroupChanged(event.message, bot, content.event)
    return event
