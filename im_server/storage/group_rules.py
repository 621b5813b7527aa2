"""Who may do what in a group: the role rules, as pure functions the group transactions call.

The transactions in :mod:`im_server.storage.groups` read the rows they depend on (locked where it matters,
so two admins acting at once cannot both win), then ask these functions, which raise
:class:`~im_server.errors.Refusal` when the rule says no. Nothing here does I/O, so the rules are tested on
their own (``tests/storage/test_group_rules.py``).

The ranks are ``owner > admin > member``:

- an operation names the least rank it needs (:func:`require_rank`): members may leave, admins may kick,
  mute and decide join requests, only the owner may name admins, transfer or dissolve;
- an admin acts only on those below them (:func:`require_outranks`): no admin kicks or mutes the owner or
  another admin;
- the owner cannot leave (they transfer ownership or dissolve instead) and is never an admin;
- members may invite only where the group allows it (:func:`require_may_invite`).
"""

from __future__ import annotations

from im_schema.errors import ErrorCode
from im_schema.groups import Role

from ..errors import Refusal

__all__ = [
    "RANK",
    "require",
    "require_may_invite",
    "require_may_leave",
    "require_not_owner",
    "require_outranks",
    "require_rank",
]

RANK: dict[str, int] = {"owner": 2, "admin": 1, "member": 0}
"""Each role's rank; a role a newer version adds ranks as a member."""


def require(condition: bool, code: ErrorCode, message: str) -> None:
    """Raise :class:`~im_server.errors.Refusal` with ``code`` unless ``condition`` holds."""
    if not condition:
        raise Refusal(code, message)


def require_rank(role: str | None, at_least: Role = "member") -> None:
    """The actor (``role``, ``None`` when not an active member) holds at least ``at_least``."""
    require(role is not None, ErrorCode.NOT_A_MEMBER, "you are not a member of this group")
    assert role is not None
    require(
        RANK.get(role, 0) >= RANK[at_least],
        ErrorCode.FORBIDDEN,
        f"only the {'owner' if at_least == 'owner' else 'owner and admins'} may do this",
    )


def require_outranks(actor: str, target: str, what: str) -> None:
    """An admin acts only on those below them (``what``: ``remove``, ``mute``)."""
    require(
        RANK.get(actor, 0) > RANK.get(target, 0),
        ErrorCode.FORBIDDEN,
        f"an admin cannot {what} the owner or another admin",
    )


def require_may_leave(role: str) -> None:
    """Anyone but the owner may leave."""
    require(role != "owner", ErrorCode.FORBIDDEN, "the owner transfers ownership or dissolves the group instead")


def require_not_owner(role: str) -> None:
    """The owner's role does not change by naming admins."""
    require(role != "owner", ErrorCode.FORBIDDEN, "the owner is not an admin")


def require_may_invite(role: str, *, allow_member_invite: bool) -> None:
    """Owner and admins may always invite; members where the group allows it."""
    require(allow_member_invite or role != "member", ErrorCode.FORBIDDEN, "members may not invite to this group")
