"""What :meth:`AsyncClient.events` and :meth:`Client.events` yield."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from im_schema.buttons import Button
from im_schema.content import SystemContent, SystemEvent, TextContent
from im_schema.events import ButtonPressNotice, Notice, PresenceNotice, ReadNotice, StreamNotice, TypingNotice
from im_schema.models import Message
from im_schema.presses import Press

__all__ = [
    "ButtonPressEvent",
    "EditEvent",
    "Event",
    "MessageEvent",
    "NoticeEvent",
    "PresenceEvent",
    "ReadEvent",
    "RecallEvent",
    "StreamEvent",
    "TypingEvent",
    "UnknownEvent",
    "to_event",
]

T_co = TypeVar("T_co", covariant=True)


class _Sender(Protocol[T_co]):
    def send_text(
        self,
        to: int | str,
        text: str,
        *,
        client_msg_id: str | None = None,
        reply_to: int | None = None,
        mentions: list[int] | None = None,
        mention_all: bool = False,
        buttons: Sequence[Button | tuple[str, str]] | None = None,
    ) -> T_co: ...


class _AboutMessage:
    """Where an event's message stands: shared by :class:`MessageEvent` and the bot's group events."""

    message: Message

    @property
    def conversation(self) -> str:
        """The conversation id."""
        return self.message.conversation

    @property
    def seq(self) -> int:
        """The message's place in its conversation."""
        return self.message.seq


@dataclass(frozen=True)
class MessageEvent(_AboutMessage, Generic[T_co]):
    """A message delivered to this device, bound to the client that received it."""

    message: Message
    _client: _Sender[T_co] = field(repr=False, compare=False)

    @property
    def sender(self) -> int:
        """The sender's user id."""
        return self.message.sender

    @property
    def sent_at(self) -> datetime:
        """When the server stored it."""
        return self.message.sent_at

    @property
    def text(self) -> str | None:
        """The text, for text messages."""
        content = self.message.content
        return content.text if isinstance(content, TextContent) else None

    @property
    def buttons(self) -> tuple[Button, ...]:
        """The message's quick-reply buttons (none for most messages)."""
        content = self.message.content
        return content.buttons or () if isinstance(content, TextContent) else ()

    def reply(
        self, text: str, *, quote: bool = True, buttons: Sequence[Button | tuple[str, str]] | None = None
    ) -> T_co:
        """Answer in the same conversation, quoting this message (await it on the async client)."""
        return self._client.send_text(
            self.message.conversation, text, reply_to=self.seq if quote else None, buttons=buttons
        )

    def stream_reply(self, *, quote: bool = True, interval: float = 0.2) -> Any:
        """A streaming answer in the same conversation, quoting this message: an
        :class:`~im_sdk.AsyncMessageStream` (``async with``) on the async client and a bot, a
        :class:`~im_sdk.MessageStream` (``with``) on the blocking client. Inside a bot's handler its open is
        idempotent like every send there."""
        stream = getattr(self._client, "stream", None)
        if stream is None:
            raise TypeError("this client cannot stream messages")
        return stream(self.message.conversation, reply_to=self.seq if quote else None, interval=interval)

    def mentions_user(self, user_id: int) -> bool:
        """Whether this message mentions the user (by name or with ``@all``)."""
        return self.message.mention_all or user_id in self.message.mentions


@dataclass(frozen=True)
class NoticeEvent:
    """Something that is not a message: a friend request, a friendship, a join request (see
    :mod:`im_schema.events`). Notices are not replayed after a reconnect; what they announce can be
    listed (``client.friends.requests()``, ``client.groups.requests(...)``)."""

    notice: Notice

    @property
    def kind(self) -> str:
        """``friend_request``, ``friend_added``, ``friend_removed``, ``join_request``, or a newer kind."""
        return self.notice.kind


@dataclass(frozen=True)
class RecallEvent:
    """A message was recalled: show it as gone. ``message`` is the system message that said so."""

    conversation: str
    seq: int
    """The recalled message."""
    by: int
    message: Message


@dataclass(frozen=True)
class EditEvent:
    """A message's text was edited. ``message`` is the system message that said so."""

    conversation: str
    seq: int
    """The edited message."""
    text: str
    by: int
    message: Message


@dataclass(frozen=True)
class ReadEvent:
    """A user read a conversation up to ``read_seq``: my own other device (clear the badge) or, in a
    direct conversation, my peer (a read receipt)."""

    conversation: str
    user_id: int
    read_seq: int


@dataclass(frozen=True)
class TypingEvent:
    """Someone is typing (or stopped) in a conversation."""

    conversation: str
    user_id: int
    active: bool


@dataclass(frozen=True)
class PresenceEvent:
    """A friend came online or went offline."""

    user_id: int
    online: bool
    last_seen: datetime | None


@dataclass(frozen=True)
class StreamEvent:
    """A streaming message grew, or was closed (see :mod:`im_schema.streams`).

    ``text`` is its whole text so far: show it in place of the message ``seq`` (delivered before as a
    :class:`MessageEvent` with ``message.stream == "open"``). ``state`` is ``open`` while it grows, then
    ``finished`` or ``abandoned``; a device that missed the last event reads the final text from history.
    """

    conversation: str
    seq: int
    sender: int
    text: str
    state: str

    @property
    def done(self) -> bool:
        """The stream is closed: ``text`` is final."""
        return self.state != "open"


@dataclass(frozen=True)
class ButtonPressEvent:
    """A member pressed a button of one of my messages. The press waits on the server until it is
    acknowledged (``client.ack_press(event.press.id)``; the bot framework does it after the handler)."""

    press: Press

    @property
    def conversation(self) -> str:
        """The conversation of the message."""
        return self.press.conversation

    @property
    def seq(self) -> int:
        """The message whose button was pressed."""
        return self.press.seq

    @property
    def button(self) -> str:
        """The id of the button pressed."""
        return self.press.button

    @property
    def user_id(self) -> int:
        """Who pressed it."""
        return self.press.user_id


@dataclass(frozen=True)
class UnknownEvent:
    """A frame of a type this SDK version does not know (from a newer server), kept as received.

    Yielded so that the application sees it (and may log it or upgrade); the loop keeps running.
    """

    type: str
    raw: dict[str, Any]


Event = (
    MessageEvent[T_co]
    | RecallEvent
    | EditEvent
    | ReadEvent
    | TypingEvent
    | PresenceEvent
    | StreamEvent
    | ButtonPressEvent
    | NoticeEvent
    | UnknownEvent
)
"""Everything ``events()`` yields; ``messages()`` yields only :class:`MessageEvent`."""


def to_event(item: Message | Notice | UnknownEvent, client: _Sender[T_co]) -> Event[T_co]:
    """The typed event for a delivered message, a pushed notice or a frame of an unknown type."""
    if isinstance(item, UnknownEvent):
        return item
    if isinstance(item, Message):
        content = item.content
        if isinstance(content, SystemContent) and content.event in (
            SystemEvent.MESSAGE_RECALLED,
            SystemEvent.MESSAGE_EDITED,
        ):
            seq = int(content.data.get("seq", 0))
            by = content.actor or item.sender
            if content.event == SystemEvent.MESSAGE_RECALLED:
                return RecallEvent(item.conversation, seq, by, item)
            return EditEvent(item.conversation, seq, str(content.data.get("text", "")), by, item)
        return MessageEvent(item, client)
    if isinstance(item, ReadNotice):
        return ReadEvent(item.conversation, item.user_id, item.read_seq)
    if isinstance(item, TypingNotice):
        return TypingEvent(item.conversation, item.user_id, item.active)
    if isinstance(item, PresenceNotice):
        return PresenceEvent(item.user_id, item.online, item.last_seen)
    if isinstance(item, StreamNotice):
        return StreamEvent(item.conversation, item.seq, item.sender, item.text, item.state)
    if isinstance(item, ButtonPressNotice):
        return ButtonPressEvent(item.press)
    return NoticeEvent(item)
