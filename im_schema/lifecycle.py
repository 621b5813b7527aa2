"""After a message is sent: read receipts, recall, edit, typing and presence."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .content import SentText
from .ids import ConversationId, Seq, UserId, UserRef
from .models import Message, Timestamp
from .rest import Endpoint, Ok, Request

__all__ = [
    "EditRequest",
    "Presence",
    "PresenceRequest",
    "RecallRequest",
    "Receipts",
    "ReceiptsRequest",
    "TypingRequest",
]


class Receipts(BaseModel):
    """Who has read a group message and who has not (from each member's read position)."""

    model_config = ConfigDict(frozen=True)

    conversation: ConversationId
    seq: Seq
    read: list[UserId]
    unread: list[UserId]


class Presence(BaseModel):
    """Whether a user is online, or when they were last seen (if they let me know)."""

    model_config = ConfigDict(frozen=True)

    user_id: UserId
    online: bool
    last_seen: Timestamp | None = None


class RecallRequest(Request[Message]):
    """Recall a message: the sender within the recall window, a group owner or admin at any time.

    Answers with the recalled message (its content replaced by ``{"kind": "recalled"}``). Everyone in the
    conversation learns it from a ``message_recalled`` system message. Recalling twice changes nothing.
    """

    endpoint = Endpoint("POST", "/v1/conversations/{conversation}/messages/{seq}/recall", Message)

    conversation: ConversationId
    seq: Seq


class EditRequest(Request[Message]):
    """Change the text of my message within the edit window; a ``message_edited`` system message tells
    everyone, and the message shows ``edited_at``. A blank text is refused, as in a send."""

    endpoint = Endpoint("PATCH", "/v1/conversations/{conversation}/messages/{seq}", Message)

    conversation: ConversationId
    seq: Seq
    text: SentText
    """The new text: not blank, as a message's (see :func:`~im_schema.content.is_blank`)."""


class ReceiptsRequest(Request[Receipts]):
    """Who has read a message (members only)."""

    endpoint = Endpoint("GET", "/v1/conversations/{conversation}/messages/{seq}/receipts", Receipts)

    conversation: ConversationId
    seq: Seq


class TypingRequest(Request[Ok]):
    """Tell the others I am typing (or stopped); never stored, rate limited."""

    endpoint = Endpoint("POST", "/v1/conversations/{conversation}/typing", Ok)

    conversation: ConversationId
    active: bool = True


class PresenceRequest(Request[Presence]):
    """A user's presence, if they are a friend or share a group with me (and did not block me)."""

    endpoint = Endpoint("GET", "/v1/users/{user}/presence", Presence)

    user: UserRef
