"""What :meth:`AsyncClient.events` and :meth:`Client.events` yield."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from im_schema.content import TextContent
from im_schema.events import Notice
from im_schema.models import Message

__all__ = ["MessageEvent", "NoticeEvent", "UnknownEvent"]

T_co = TypeVar("T_co", covariant=True)


class _Sender(Protocol[T_co]):
    def send_text(self, to: int | str, text: str, *, client_msg_id: str | None = None) -> T_co: ...


@dataclass(frozen=True)
class MessageEvent(Generic[T_co]):
    """A message delivered to this device, bound to the client that received it."""

    message: Message
    _client: _Sender[T_co] = field(repr=False, compare=False)

    @property
    def conversation(self) -> str:
        """The conversation id."""
        return self.message.conversation

    @property
    def seq(self) -> int:
        """The message's place in its conversation."""
        return self.message.seq

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

    def reply(self, text: str) -> T_co:
        """Send ``text`` into the same conversation (await it on the async client)."""
        return self._client.send_text(self.message.conversation, text)


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
class UnknownEvent:
    """A frame this SDK version does not understand, kept as received."""

    type: str
    raw: dict[str, Any]
