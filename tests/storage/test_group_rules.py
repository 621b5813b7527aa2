"""The group role rules on their own: no database, every combination of roles."""

from __future__ import annotations

import itertools

import pytest

from im_schema.errors import ErrorCode
from im_server.errors import Refusal
from im_server.storage.group_rules import (
    RANK,
    require_may_invite,
    require_may_leave,
    require_not_owner,
    require_outranks,
    require_rank,
)

ROLES = ("owner", "admin", "member")


def _refused(call, *args, **kwargs) -> ErrorCode | None:
    try:
        call(*args, **kwargs)
    except Refusal as refusal:
        caught: Refusal | None = refusal
    else:
        caught = None
    if caught is None:
        return None
    assert caught.status == 403
    return caught.code


@pytest.mark.parametrize(("role", "at_least"), list(itertools.product(ROLES, ROLES)))
def test_rank(role: str, at_least: str) -> None:
    expected = None if RANK[role] >= RANK[at_least] else ErrorCode.FORBIDDEN
    assert _refused(require_rank, role, at_least) == expected


@pytest.mark.parametrize("at_least", ROLES)
def test_a_non_member_is_told_so(at_least: str) -> None:
    assert _refused(require_rank, None, at_least) == ErrorCode.NOT_A_MEMBER


def test_the_message_names_who_may() -> None:
    with pytest.raises(Refusal, match="only the owner may"):
        require_rank("admin", "owner")
    with pytest.raises(Refusal, match="only the owner and admins may"):
        require_rank("member", "admin")


@pytest.mark.parametrize(("actor", "target"), list(itertools.product(ROLES, ROLES)))
def test_acting_on_someone_needs_a_higher_rank(actor: str, target: str) -> None:
    allowed = (actor, target) in {("owner", "admin"), ("owner", "member"), ("admin", "member")}
    assert _refused(require_outranks, actor, target, "mute") == (None if allowed else ErrorCode.FORBIDDEN)


def test_a_role_from_a_newer_version_ranks_as_a_member() -> None:
    assert _refused(require_rank, "moderator", "member") is None
    assert _refused(require_rank, "moderator", "admin") == ErrorCode.FORBIDDEN
    assert _refused(require_outranks, "admin", "moderator", "remove") is None


@pytest.mark.parametrize("role", ROLES)
def test_only_the_owner_cannot_leave_or_be_named_admin(role: str) -> None:
    expected = ErrorCode.FORBIDDEN if role == "owner" else None
    assert _refused(require_may_leave, role) == expected
    assert _refused(require_not_owner, role) == expected


@pytest.mark.parametrize(("role", "allowed"), list(itertools.product(ROLES, (True, False))))
def test_who_may_invite(role: str, allowed: bool) -> None:
    expected = None if allowed or role != "member" else ErrorCode.FORBIDDEN
    assert _refused(require_may_invite, role, allow_member_invite=allowed) == expected
