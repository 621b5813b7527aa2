"""Messages, system events and notices in words, shared by the line commands and ``im chat``.

Everything here is plain text (not rich markup): callers escape it. Names come from a ``NameOf``
callable (user id -> username), so the same wording serves the blocking CLI (which looks names up)
and the terminal UI (which has them cached).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from im_schema.buttons import Button
from im_schema.content import RecalledContent, SystemContent, SystemEvent, TextContent
from im_schema.events import (
    ButtonPressNotice,
    FriendAddedNotice,
    FriendRemovedNotice,
    FriendRequestNotice,
    GroupInvitationNotice,
    JoinRequestNotice,
    Notice,
)
from im_schema.models import Message
from im_schema.presses import BotCommand, Press

from .output import when
from .transfer import describe_media

__all__ = [
    "NameOf",
    "body",
    "button_for",
    "buttons_text",
    "commands_text",
    "connection_log",
    "connection_lost",
    "mentions_text",
    "notice_text",
    "plural",
    "press_text",
    "reply_text",
    "system_text",
]

NameOf = Callable[[int], str]


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 member``, ``2 members``, ``0 messages``."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


_SYSTEM: dict[str, str] = {
    SystemEvent.GROUP_CREATED: "created the group",
    SystemEvent.GROUP_UPDATED: "changed the group settings",
    SystemEvent.GROUP_DISSOLVED: "dissolved the group",
    SystemEvent.MEMBERS_JOINED: "added {users}",
    SystemEvent.MEMBER_JOINED: "joined",
    SystemEvent.MEMBER_LEFT: "left",
    SystemEvent.MEMBER_KICKED: "removed {user}",
    SystemEvent.ANNOUNCEMENT_SET: "set the announcement: {text}",
    SystemEvent.OWNER_TRANSFERRED: "made {user} the owner",
    SystemEvent.ADMIN_ADDED: "made {user} an admin",
    SystemEvent.ADMIN_REMOVED: "made {user} a member again",
    SystemEvent.MEMBER_MUTED: "muted {user} until {until}",
    SystemEvent.MEMBER_UNMUTED: "unmuted {user}",
    SystemEvent.NICKNAME_SET: "is now called {nickname}",
    SystemEvent.MESSAGE_RECALLED: "recalled #{seq}",
    SystemEvent.MESSAGE_EDITED: "edited #{seq}",
}


def _local(value: object) -> object:
    """An ISO timestamp as a short local time; anything else unchanged."""
    if isinstance(value, str):
        try:
            return when(datetime.fromisoformat(value))
        except ValueError:
            return value
    return value


def system_text(content: SystemContent, name_of: NameOf) -> str:
    """A system message in words, without the actor (``added bob, carol``)."""
    data = dict(content.data)
    if "user" in data:
        data["user"] = name_of(int(data["user"]))
    if "users" in data:
        data["users"] = ", ".join(name_of(int(user)) for user in data["users"])
    for key in ("until", "at"):
        if key in data:
            data[key] = _local(data[key])
    template = _SYSTEM.get(content.event)
    try:
        return template.format_map(data) if template else content.event.replace("_", " ")
    except (KeyError, ValueError):
        return content.event.replace("_", " ")


def body(message: Message, name_of: NameOf) -> str:
    """What a message says: its text (``…`` after a streaming one still being written, ``(cut short)`` after
    one abandoned), its file (``[image] cat.jpg · 1.2 MB``), or the event in words."""
    content = message.content
    if isinstance(content, TextContent):
        if message.stream == "open":
            return content.text + " …"  # still being written
        if message.stream == "abandoned":
            return content.text + " (cut short)"
        return content.text
    if isinstance(content, SystemContent):
        return system_text(content, name_of)
    if isinstance(content, RecalledContent):
        who = "" if content.by == message.sender else f" by {name_of(content.by)}"
        return f"(recalled{who})"
    return describe_media(message) or f"[{content.kind}]"


def reply_text(message: Message, name_of: NameOf, width: int = 40) -> str | None:
    """``↪ bob #2: "the start of it"`` for a reply, else ``None``."""
    quoted = message.reply_to
    if quoted is None:
        return None
    preview = quoted.preview if len(quoted.preview) <= width else quoted.preview[: width - 1] + "…"
    return f'↪ {name_of(quoted.sender)} #{quoted.seq}: "{preview}"'


def mentions_text(message: Message, name_of: NameOf) -> str | None:
    """``@all @bob`` for a message that mentions people, else ``None``."""
    names = (["@all"] if message.mention_all else []) + [f"@{name_of(user)}" for user in message.mentions]
    return " ".join(names) or None


def buttons_text(message: Message) -> str | None:
    """``[1] Yes  [2] No`` for a message with quick-reply buttons, else ``None``."""
    content = message.content
    buttons = content.buttons if isinstance(content, TextContent) else None
    if not buttons:
        return None
    return "  ".join(f"[{number}] {button.label}" for number, button in enumerate(buttons, 1))


def button_for(message: Message, choice: str) -> Button | None:
    """The button a person means: its number as shown (``1``), or its id."""
    content = message.content
    buttons = (content.buttons or ()) if isinstance(content, TextContent) else ()
    if choice.isdigit() and 1 <= int(choice) <= len(buttons):
        return buttons[int(choice) - 1]
    return next((button for button in buttons if button.id == choice), None)


def press_text(press: Press, name_of: NameOf) -> str:
    """``alice pressed "yes" on d:1:2#4``."""
    return f'{name_of(press.user_id)} pressed "{press.button}" on {press.conversation}#{press.seq}'


def commands_text(commands: list[BotCommand]) -> list[str]:
    """``/weather CITY - the weather``, one line per command."""
    return [f"/{c.name}{' ' + c.args if c.args else ''} - {c.description}" for c in commands]


def notice_text(notice: Notice, name_of: NameOf, group_name: Callable[[int], str] | None = None) -> str:
    """A notice in words, with the command that answers it."""
    if isinstance(notice, FriendRequestNotice):
        request = notice.request
        note = f": {request.message}" if request.message else ""
        sender = request.from_user.username
        return f"{sender} wants to be your friend (im friends accept {sender}){note}"
    if isinstance(notice, FriendAddedNotice):
        return f"you and {notice.user.username} are friends now"
    if isinstance(notice, FriendRemovedNotice):
        return f"{name_of(notice.user_id)} is no longer your friend"
    if isinstance(notice, JoinRequestNotice):
        join = notice.request
        group = group_name(join.group_id) if group_name else f"g:{join.group_id}"
        how = f"im groups approve g:{join.group_id} {join.id}"
        return f"{join.user.username} asks to join {group} ({how})"
    if isinstance(notice, GroupInvitationNotice):
        invite = notice.invitation
        if invite.status == "pending":
            how = f"im groups accept {invite.id}"
            return f"{invite.inviter.username} invites you to {invite.group_name} ({how})"
        return f"the invitation to {invite.group_name} is {invite.status}"
    if isinstance(notice, ButtonPressNotice):
        return press_text(notice.press, name_of)
    return f"notice: {notice.kind.replace('_', ' ')}"


def connection_lost(record: logging.LogRecord) -> str | None:
    """The reason in words when an SDK log record says the realtime connection was lost, else ``None``.

    The record carries the exception itself: its text (``node stopping; reconnect``) is shown, not its
    ``repr`` (``GoingAway('node stopping; reconnect')``).
    """
    message = record.getMessage()
    if not message.startswith(("realtime connection lost", "realtime setup failed")):
        return None
    args = record.args if isinstance(record.args, tuple) else ()
    if args and isinstance(args[0], BaseException):
        exc = args[0]
        return str(exc) or type(exc).__name__
    return message.split("(", 1)[-1].rsplit(")", 1)[0] if "(" in message else message


def connection_up(record: logging.LogRecord) -> bool:
    """Whether an SDK log record says that a realtime connection is up (authenticated on a gateway, about to
    catch up)."""
    return getattr(record, "im_realtime", None) == "up"


@contextlib.contextmanager
def connection_log(handler: logging.Handler) -> Iterator[None]:
    """While the block runs, ``handler`` gets the SDK's log records from INFO up (where it says that the
    realtime connection was lost or is up: see :func:`connection_lost` and :func:`connection_up`).

    The ``im_sdk`` logger's level and handlers are put back afterwards: a process that goes on (a shell
    running commands in-process, a test session) keeps its own logging.
    """
    sdk_log = logging.getLogger("im_sdk")
    level = sdk_log.level
    sdk_log.addHandler(handler)
    if sdk_log.getEffectiveLevel() > logging.INFO:
        sdk_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        sdk_log.removeHandler(handler)
        sdk_log.setLevel(level)
