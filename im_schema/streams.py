"""Streaming messages: a text message that grows while its sender (a bot answering with a language model,
say) writes it.

A stream is an ordinary text message with a seq, stored when it is opened and marked
``stream="open"`` (see :attr:`~im_schema.models.Message.stream`). Its sender then writes text *at an
offset*: the text becomes ``text[:offset] + delta``. Writing at the current length appends; sending the
same write again changes nothing, so every write may be retried. Finishing it (or the server, once it was
idle too long) closes it for good: ``stream="finished"`` (or ``"abandoned"``).

Members' online devices get :class:`~im_schema.events.StreamNotice` notices with the whole text so far,
at most a few per second per stream, so a missed one heals at the next; devices that connect or sync
mid-stream read the message (history holds the text so far, then the final text).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ._tolerant import Tolerant, UnknownValue
from .content import SentText
from .ids import STORABLE_TEXT, ClientMsgId, ConversationId, Seq, UserId, Username
from .limits import MAX_TEXT_LEN
from .models import Message, _StreamState
from .rest import _ONE_TARGET, Endpoint, Request

__all__ = [
    "AppendStreamRequest",
    "FinishStreamRequest",
    "OpenStreamRequest",
    "StreamProgress",
    "StreamState",
]

StreamState = _StreamState
"""``open`` while its sender writes; ``finished`` once done; ``abandoned`` if it was cut short (the sender
gave up, or stopped writing for longer than the server waits)."""

_Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_LEN, pattern=STORABLE_TEXT)]
_Offset = Annotated[int, Field(ge=0, le=MAX_TEXT_LEN)]


class StreamProgress(BaseModel):
    """Where a stream stands after a write."""

    model_config = ConfigDict(frozen=True)

    conversation: ConversationId
    seq: Seq
    length: int
    """Characters of text stored so far: the offset of the next append."""
    state: Annotated[StreamState | UnknownValue, Tolerant(StreamState)]


class OpenStreamRequest(Request[Message]):
    """Open a streaming text message to a user (``to``) or in a conversation (``conversation``).

    It is stored at once, with its seq, and delivered like any message (``stream`` is ``"open"``). The same
    rules as ``POST /v1/messages`` apply (the text to begin with is not blank), and the same
    ``client_msg_id`` returns the stored message (which may be finished by then) instead of opening a
    second one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_ONE_TARGET)

    endpoint = Endpoint("POST", "/v1/streams", Message)

    to: UserId | Username | None = None
    conversation: ConversationId | None = None
    client_msg_id: ClientMsgId
    text: SentText
    """The text to begin with: not blank, as a message's (see :func:`~im_schema.content.is_blank`)."""
    reply_to: Seq | None = None
    mentions: Annotated[list[UserId], Field(max_length=100)] = Field(default_factory=list)
    mention_all: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> OpenStreamRequest:
        if (self.to is None) == (self.conversation is None):
            raise ValueError("give exactly one of 'to' and 'conversation'")
        return self


class AppendStreamRequest(Request[StreamProgress]):
    """Write ``text`` at ``offset`` of my open stream: it becomes ``text_so_far[:offset] + text``.

    ``offset`` is at most the current length (the length appends); a repeated write changes nothing. Only the
    stream's sender may write (from any of its devices). Past the text limit: ``text_too_long``; once it is
    closed: ``stream_closed``.
    """

    endpoint = Endpoint("POST", "/v1/conversations/{conversation}/messages/{seq}/stream", StreamProgress)

    conversation: ConversationId
    seq: Seq
    offset: _Offset
    text: _Text


class FinishStreamRequest(Request[Message]):
    """Close my stream, optionally writing a last piece first (``text`` at ``offset``, as an append does).

    ``abandon`` marks it cut short (an error on the sender's side) rather than finished. The answer is the
    final message. Finishing a stream that is already closed answers the message as it is.
    """

    endpoint = Endpoint("POST", "/v1/conversations/{conversation}/messages/{seq}/stream/finish", Message)

    conversation: ConversationId
    seq: Seq
    offset: _Offset | None = None
    text: _Text | None = None
    abandon: bool = False

    @model_validator(mode="after")
    def _both_or_neither(self) -> FinishStreamRequest:
        if (self.offset is None) != (self.text is None):
            raise ValueError("give both 'offset' and 'text', or neither")
        return self
