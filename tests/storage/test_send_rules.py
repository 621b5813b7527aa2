"""The rules of a send on their own: no database, every combination that decides."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from im_schema.errors import ErrorCode
from im_server.errors import Refusal
from im_server.storage.send_rules import group_send_refusal, mention_all_refusal, mention_refusal, reply_refusal

NOW = 1_000_000


@dataclass(frozen=True)
class Group:
    muted_all: bool = False
    dissolved: bool = False


@dataclass(frozen=True)
class Member:
    role: str = "member"
    muted_until: int | None = None
    left_seq: int | None = None
    joined_seq: int = 0


@dataclass(frozen=True)
class Original:
    seq: int
    kind: str = "text"


def _code(refusal: Refusal | None) -> ErrorCode | None:
    return None if refusal is None else refusal.code


@pytest.mark.parametrize(
    ("dissolved", "muted_all", "role", "muted_until", "left"),
    list(
        itertools.product(
            (False, True),
            (False, True),
            ("owner", "admin", "member", "moderator", None),
            (None, NOW - 1, NOW, NOW + 1),
            (False, True),
        )
    ),
)
def test_group_send(dissolved: bool, muted_all: bool, role: str | None, muted_until: int | None, left: bool) -> None:
    member = None if role is None else Member(role=role, muted_until=muted_until, left_seq=5 if left else None)
    refusal = group_send_refusal(Group(muted_all=muted_all, dissolved=dissolved), member, NOW)
    if dissolved:
        expected: ErrorCode | None = ErrorCode.GROUP_DISSOLVED
    elif role is None or left:
        expected = ErrorCode.NOT_A_MEMBER
    elif (muted_until is not None and muted_until > NOW) or (muted_all and role not in ("owner", "admin")):
        # A mute ends at its time; a role a newer version adds ranks as a member.
        expected = ErrorCode.MUTED
    else:
        expected = None
    assert _code(refusal) == expected
    if refusal is not None:
        assert refusal.message


@pytest.mark.parametrize(
    ("original", "joined_seq", "allowed"),
    [
        (None, 0, False),  # no such message
        (Original(3), 0, True),
        (Original(3, "image"), 0, True),
        (Original(3, "poll"), 0, True),  # a kind this version does not know is still a message
        (Original(3, "system"), 0, False),
        (Original(3, "recalled"), 0, False),
        (Original(3), 2, True),
        (Original(3), 3, False),  # before the sender joined: not theirs to see
        (Original(3), 4, False),
    ],
)
def test_reply(original: Original | None, joined_seq: int, allowed: bool) -> None:
    assert _code(reply_refusal(original, joined_seq)) == (None if allowed else ErrorCode.BAD_REQUEST)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("owner", True), ("admin", True), ("member", False), ("moderator", False), (None, False)],
)
def test_mention_all(role: str | None, allowed: bool) -> None:
    assert _code(mention_all_refusal(role)) == (None if allowed else ErrorCode.FORBIDDEN)


def test_mentions_in_a_group_name_present_members_only() -> None:
    assert mention_refusal("g:1", [2, 3], {2, 3, 4}) is None
    refusal = mention_refusal("g:1", [5, 2, 9, 5], {2, 3})
    assert refusal is not None and refusal.code == ErrorCode.BAD_REQUEST
    assert refusal.message == "not in this conversation: [5, 9]"
    assert _code(mention_refusal("g:1", [2], ())) == ErrorCode.BAD_REQUEST


def test_mentions_in_a_direct_conversation_name_its_two_users() -> None:
    # The ids come from the conversation, whatever the caller found in the group membership.
    assert mention_refusal("d:2:7", [2, 7], ()) is None
    assert _code(mention_refusal("d:2:7", [3], {3})) == ErrorCode.BAD_REQUEST
