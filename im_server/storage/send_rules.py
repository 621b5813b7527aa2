"""Who may send what: the rules of a send, as pure functions the commit transaction calls.

The group-commit transaction (:func:`im_server.storage.messages.MessageStore.write_batch`) reads, for a whole
batch at once, the rows these rules depend on: the senders' memberships, the groups' state, the messages
replied to and the members mentioned. It reads them inside the commit, so that a kick or a mute on another
node cannot race a send. Then it asks these functions, one item at a time; each returns the
:class:`~im_server.errors.Refusal` the item gets, or ``None``. Nothing here does I/O, so the rules are tested on
their own (``tests/storage/test_send_rules.py``), as the group role rules are (:mod:`.group_rules`).

- A group send needs a group that is not dissolved, a sender who is an active member and not muted, and,
  while the whole group is muted, an owner or admin (:func:`group_send_refusal`).
- A reply names a message the sender can see: stored, not a system message or recalled
  (:data:`~.message_rows.UNCOUNTED_KINDS`), and after the sender joined (:func:`reply_refusal`).
- ``@all`` is for group owners and admins (:func:`mention_all_refusal`); a mention names someone in the
  conversation (:func:`mention_refusal`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from im_schema.errors import ErrorCode
from im_schema.ids import direct_users

from ..errors import Refusal
from .group_rules import RANK
from .message_rows import UNCOUNTED_KINDS

__all__ = [
    "GroupState",
    "Membership",
    "Original",
    "group_send_refusal",
    "mention_all_refusal",
    "mention_refusal",
    "reply_refusal",
]


class Membership(Protocol):
    """A sender's membership row in a group (a database row or any object with these attributes)."""

    @property
    def role(self) -> str: ...
    @property
    def muted_until(self) -> int | None: ...
    @property
    def left_seq(self) -> int | None: ...
    @property
    def joined_seq(self) -> int: ...


class GroupState(Protocol):
    """What a send needs to know of its group."""

    @property
    def muted_all(self) -> bool: ...
    @property
    def dissolved(self) -> bool: ...


class Original(Protocol):
    """The stored message a reply names."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...


_ADMIN = RANK["admin"]


def group_send_refusal(group: GroupState, member: Membership | None, now: int) -> Refusal | None:
    """Why ``member`` (``None``: never a member) may not send to ``group`` at ``now`` (ms), if they may not."""
    if group.dissolved:
        return Refusal(ErrorCode.GROUP_DISSOLVED, "the group was dissolved")
    if member is None or member.left_seq is not None:
        return Refusal(ErrorCode.NOT_A_MEMBER, "you are not a member of this group")
    if member.muted_until is not None and member.muted_until > now:
        return Refusal(ErrorCode.MUTED, "you are muted in this group")
    if group.muted_all and RANK.get(member.role, 0) < _ADMIN:
        return Refusal(ErrorCode.MUTED, "only the owner and admins may speak while the group is muted")
    return None


def reply_refusal(original: Original | None, joined_seq: int) -> Refusal | None:
    """Why a reply to ``original`` (``None``: no such message) may not be sent by someone whose history starts
    after ``joined_seq``, if it may not."""
    if original is None or original.kind in UNCOUNTED_KINDS or original.seq <= joined_seq:
        return Refusal(ErrorCode.BAD_REQUEST, "there is no such message to reply to")
    return None


def mention_all_refusal(role: str | None) -> Refusal | None:
    """Why a sender with ``role`` in the group (``None``: no role, or not a group) may not mention everyone."""
    if role is None or RANK.get(role, 0) < _ADMIN:
        return Refusal(ErrorCode.FORBIDDEN, "only group owners and admins may mention everyone")
    return None


def mention_refusal(conversation: str, mentions: Sequence[int], present: Collection[int]) -> Refusal | None:
    """Why ``mentions`` may not be sent to ``conversation``, if they may not: everyone named must be in it.

    ``present`` holds the active members among the mentioned users of a group (a direct conversation's users
    are read from its id)."""
    if not conversation.startswith("g:"):
        present = direct_users(conversation)
    strangers = sorted({user for user in mentions if user not in present})
    if strangers:
        return Refusal(ErrorCode.BAD_REQUEST, f"not in this conversation: {strangers}")
    return None
