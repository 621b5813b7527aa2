"""A bot framework on :class:`~im_sdk.AsyncClient`: handlers, filters, routers, middleware, and
exactly-once handling across restarts.

::

    from im_sdk.bot import Bot, Command, FriendRequest, MessageEvent

    bot = Bot.from_env(state_path="echo.sqlite3")

    @bot.on_event(FriendRequest)
    async def befriend(event: FriendRequest) -> None:
        await event.accept()

    @bot.on_message(Command("help"))
    async def help(msg: MessageEvent) -> None:
        await msg.reply("try /weather paris")

    bot.run()

See :mod:`im_sdk.bot.bot` for scheduling and exactly-once handling, :mod:`im_sdk.bot.router` for
dispatch, middleware and errors, :mod:`im_sdk.bot.filters` and :mod:`im_sdk.bot.events`.
"""

from __future__ import annotations

from im_schema.buttons import Button

from ..events import EditEvent, MessageEvent, NoticeEvent, PresenceEvent, ReadEvent, RecallEvent, TypingEvent
from .bot import Bot, HandlingContext
from .events import (
    ButtonPress,
    FriendAdded,
    FriendRemoved,
    FriendRequest,
    GroupChanged,
    GroupInvitation,
    JoinRequest,
    MemberLeft,
    MembersJoined,
)
from .filters import (
    Command,
    CommandArgs,
    Conversation,
    Filter,
    Kind,
    Mentioned,
    Pressed,
    Regex,
    Sender,
    Text,
    direct,
    group,
)
from .router import ErrorHook, Handler, Middleware, NextHandler, Router

__all__ = [
    "Bot",
    "Button",
    "ButtonPress",
    "Command",
    "CommandArgs",
    "Conversation",
    "EditEvent",
    "ErrorHook",
    "Filter",
    "FriendAdded",
    "FriendRemoved",
    "FriendRequest",
    "GroupChanged",
    "GroupInvitation",
    "Handler",
    "HandlingContext",
    "JoinRequest",
    "Kind",
    "MemberLeft",
    "MembersJoined",
    "Mentioned",
    "MessageEvent",
    "Middleware",
    "NextHandler",
    "NoticeEvent",
    "PresenceEvent",
    "Pressed",
    "ReadEvent",
    "RecallEvent",
    "Regex",
    "Router",
    "Sender",
    "Text",
    "TypingEvent",
    "direct",
    "group",
]
