"""Notices: things pushed to a user's devices that are not messages of a conversation.

Unlike messages they have no seq and are not replayed by sync; what they announce can always be read
back (pending friend requests, join requests). Readers must accept kinds they do not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag

from ._tagged import UNKNOWN, tags_of
from ._tolerant import Tolerant, UnknownValue
from .groups import GroupInvitation, JoinRequest
from .ids import UserId
from .models import Timestamp, User
from .presses import Press
from .social import FriendRequest
from .streams import StreamState

__all__ = [
    "ButtonPressNotice",
    "FriendAddedNotice",
    "FriendRemovedNotice",
    "FriendRequestNotice",
    "GroupInvitationNotice",
    "JoinRequestNotice",
    "Notice",
    "PresenceNotice",
    "ReadNotice",
    "StreamNotice",
    "TypingNotice",
    "UnknownNotice",
]


class FriendRequestNotice(BaseModel):
    """Someone asked me to be their friend."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["friend_request"] = "friend_request"
    request: FriendRequest


class FriendAddedNotice(BaseModel):
    """A friendship began (my request was accepted, or I accepted one on another device)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["friend_added"] = "friend_added"
    user: User


class FriendRemovedNotice(BaseModel):
    """A friendship ended."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["friend_removed"] = "friend_removed"
    user_id: UserId


class JoinRequestNotice(BaseModel):
    """Someone asked to join a group I administer."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["join_request"] = "join_request"
    request: JoinRequest


class GroupInvitationNotice(BaseModel):
    """An invitation to a group sent to me was created or changed (accepted or declined on another of my
    devices, or withdrawn); ``invitation.status`` says which. List pending ones with
    ``GET /v1/groups/invitations``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["group_invitation"] = "group_invitation"
    invitation: GroupInvitation


class ReadNotice(BaseModel):
    """A user read a conversation up to ``read_seq``: my other devices clear their badges, and in a
    direct conversation my peer sees the read receipt."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["read"] = "read"
    conversation: str
    user_id: UserId
    read_seq: int


class TypingNotice(BaseModel):
    """Someone is typing (``active``) or stopped, in a conversation I am in."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["typing"] = "typing"
    conversation: str
    user_id: UserId
    active: bool


class PresenceNotice(BaseModel):
    """A friend came online or went offline."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["presence"] = "presence"
    user_id: UserId
    online: bool
    last_seen: Timestamp | None = None


class StreamNotice(BaseModel):
    """A streaming message grew, or was closed: ``text`` is its whole text so far (a missed notice heals at
    the next). Sent at most a few times per second per stream; the last one of a stream has ``state``
    ``finished`` or ``abandoned``. See :mod:`im_schema.streams`."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["stream"] = "stream"
    conversation: str
    seq: int
    sender: UserId
    text: str
    state: Annotated[StreamState | UnknownValue, Tolerant(StreamState)]


class ButtonPressNotice(BaseModel):
    """A member pressed a button of my message. The press is kept until I acknowledge it
    (``POST /v1/presses/{id}/ack``): list those I missed with ``GET /v1/presses``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["button_press"] = "button_press"
    press: Press


class UnknownNotice(BaseModel):
    """A notice kind this version does not know, kept whole."""

    model_config = ConfigDict(frozen=True, extra="allow")

    kind: str


def _kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in _KNOWN else UNKNOWN


Notice = Annotated[
    Annotated[FriendRequestNotice, Tag("friend_request")]
    | Annotated[FriendAddedNotice, Tag("friend_added")]
    | Annotated[FriendRemovedNotice, Tag("friend_removed")]
    | Annotated[JoinRequestNotice, Tag("join_request")]
    | Annotated[GroupInvitationNotice, Tag("group_invitation")]
    | Annotated[ReadNotice, Tag("read")]
    | Annotated[TypingNotice, Tag("typing")]
    | Annotated[PresenceNotice, Tag("presence")]
    | Annotated[StreamNotice, Tag("stream")]
    | Annotated[ButtonPressNotice, Tag("button_press")]
    | Annotated[UnknownNotice, Tag("unknown")],
    Discriminator(_kind),
]
"""Any notice; kinds unknown to this version read as :class:`UnknownNotice`. The known kinds are read from
this union: to add one, declare its model and add a tagged branch (before ``unknown``)."""

_KNOWN = frozenset(tags_of(Notice))
