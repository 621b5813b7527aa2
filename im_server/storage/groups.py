"""Groups: :class:`GroupStore`, the facade over every group transaction.

The transactions live by concern: a group's life (create, read, settings, dissolve) in
:mod:`.group_lifecycle`, membership in :mod:`.group_members`, join requests and invitations in
:mod:`.group_requests`, and what they share (rows, locks, consent) in :mod:`.group_base`.

Every change is one transaction that also appends a system message to the group's conversation and,
when membership changes, bumps the conversation's ``members_version``. Role rules are checked in that
same transaction, so two admins acting at once cannot both win.
"""

from __future__ import annotations

from typing import Any

from im_schema.groups import Group, GroupInvitation, JoinRequest
from im_schema.ids import group_conversation
from im_schema.models import User
from im_schema.social import GroupInvitePolicy

from ..errors import Refusal
from .consent import ConsentLimits
from .engine import Database
from .group_base import Change, MemberRow, Roster, _member_row, lock_user
from .group_lifecycle import _announce, _create, _dissolve, _group, _groups_of, _update_group
from .group_members import (
    _add,
    _managers,
    _members_page,
    _mute,
    _remove,
    _roster,
    _set_admin,
    _set_mine,
    _share_a_group,
    _transfer,
)
from .group_requests import (
    _accept_invitation,
    _decide_join,
    _decline_invitation,
    _invitations_for,
    _invitations_of,
    _join_requests,
    _privacy,
    _request_join,
    _set_privacy,
    _withdraw_invitation,
)

# Change, MemberRow, Roster and lock_user are re-exported from .group_base, where they live.
__all__ = ["Change", "GroupRuleError", "GroupStore", "MemberRow", "Roster", "lock_user"]

GroupRuleError = Refusal
"""The old name of :class:`im_server.errors.Refusal`, which every group rule raises."""


class GroupStore:
    """Named transactions on groups."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        owner: int,
        name: str,
        member_ids: list[int],
        *,
        join_policy: str,
        allow_member_invite: bool,
        history_visible: bool,
        limit: int,
        now: int,
        consent: ConsentLimits | None = None,
    ) -> Change:
        """A new group with its owner and first members, announced by a ``group_created`` message; the
        listed users whose consent is needed are invited instead (``consent``, else the defaults)."""
        return await self._db.write(
            _create,
            owner,
            name,
            member_ids,
            join_policy,
            allow_member_invite,
            history_visible,
            limit,
            now,
            consent or ConsentLimits(),
        )

    async def get(self, group_id: int, viewer: int | None) -> Group | None:
        """A group as ``viewer`` sees it (their role, nickname and remark)."""
        return await self._db.read(_group, group_id, viewer)

    async def of_user(self, user_id: int) -> list[Group]:
        """The groups a user is an active member of."""
        return await self._db.read(_groups_of, user_id)

    async def member(self, group_id: int, user_id: int) -> MemberRow | None:
        """One membership row (also of a member who left)."""
        return await self._db.read(_member_row, group_conversation(group_id), user_id)

    async def members(self, group_id: int, *, after: int, limit: int) -> tuple[list[tuple[User, Any]], bool]:
        """A page of active members by user id: ``(user, row)`` with role, nickname, mute and join time."""
        return await self._db.read(_members_page, group_id, after, limit)

    async def roster(self, conversation: str, *, recent_since: int) -> Roster | None:
        """Active members plus those who left after ``recent_since`` (ms), with the membership version."""
        return await self._db.read(_roster, conversation, recent_since)

    async def add(
        self,
        group_id: int,
        actor: int,
        user_ids: list[int],
        *,
        via: str,
        limit: int,
        now: int,
        consent: ConsentLimits | None = None,
    ) -> Change:
        """Add users (``via`` ``invite``, ``join`` or ``approval``); rules for ``invite`` (roles and consent:
        some users may be invited instead) are checked here."""
        return await self._db.write(_add, group_id, actor, user_ids, via, limit, now, consent or ConsentLimits())

    async def remove(self, group_id: int, actor: int, user_id: int, *, now: int) -> Change:
        """A member leaves (``actor == user_id``) or is kicked."""
        return await self._db.write(_remove, group_id, actor, user_id, now)

    async def dissolve(self, group_id: int, actor: int, *, now: int) -> Change:
        """End the group (owner)."""
        return await self._db.write(_dissolve, group_id, actor, now)

    async def update(self, group_id: int, actor: int, changes: dict[str, Any], *, now: int) -> Change:
        """Rename or change settings (owner and admins)."""
        return await self._db.write(_update_group, group_id, actor, changes, now)

    async def announce(self, group_id: int, actor: int, text: str, *, now: int) -> Change:
        """Set the announcement (owner and admins)."""
        return await self._db.write(_announce, group_id, actor, text, now)

    async def transfer(self, group_id: int, actor: int, new_owner: int, *, now: int) -> Change:
        """Hand ownership to another member (owner); the old owner becomes an admin."""
        return await self._db.write(_transfer, group_id, actor, new_owner, now)

    async def set_admin(self, group_id: int, actor: int, user_id: int, admin: bool, *, now: int) -> Change:
        """Grant or revoke admin (owner)."""
        return await self._db.write(_set_admin, group_id, actor, user_id, admin, now)

    async def mute(self, group_id: int, actor: int, user_id: int, until: int | None, *, now: int) -> Change:
        """Mute a member until ``until`` (ms), or lift the mute."""
        return await self._db.write(_mute, group_id, actor, user_id, until, now)

    async def set_mine(
        self, group_id: int, user_id: int, *, nickname: str | None, remark: str | None, now: int
    ) -> Change:
        """My nickname (announced) and my private remark (not announced)."""
        return await self._db.write(_set_mine, group_id, user_id, nickname, remark, now)

    async def request_join(self, group_id: int, user_id: int, message: str, *, now: int) -> JoinRequest:
        """Ask to join a group that needs approval."""
        return await self._db.write(_request_join, group_id, user_id, message, now)

    async def join_requests(self, group_id: int, actor: int) -> list[JoinRequest]:
        """Pending requests (owner and admins)."""
        return await self._db.read(_join_requests, group_id, actor)

    async def decide_join(
        self, group_id: int, request_id: int, actor: int, approve: bool, *, limit: int, now: int
    ) -> Change:
        """Approve (the requester joins) or reject a request (owner and admins)."""
        return await self._db.write(_decide_join, group_id, request_id, actor, approve, limit, now)

    async def invitations_for(self, user_id: int, *, now: int) -> list[GroupInvitation]:
        """The pending invitations a user may see and accept, oldest first."""
        return await self._db.read(_invitations_for, user_id, now)

    async def invitations_of(self, group_id: int, actor: int, *, now: int) -> list[GroupInvitation]:
        """A group's pending invitations: all for the owner and admins, their own for other members."""
        return await self._db.read(_invitations_of, group_id, actor, now)

    async def accept_invitation(self, invitation_id: int, user_id: int, *, limit: int, now: int) -> Change:
        """The invitee joins (``members_joined`` ``via`` ``invitation``)."""
        return await self._db.write(_accept_invitation, invitation_id, user_id, limit, now)

    async def decline_invitation(self, invitation_id: int, user_id: int, *, now: int) -> GroupInvitation:
        """The invitee says no."""
        return await self._db.write(_decline_invitation, invitation_id, user_id, now)

    async def withdraw_invitation(
        self, group_id: int, invitation_id: int, actor: int, *, now: int
    ) -> tuple[GroupInvitation, bool]:
        """The inviter (or an owner or admin) takes an invitation back; also whether the invitee may see it."""
        return await self._db.write(_withdraw_invitation, group_id, invitation_id, actor, now)

    async def privacy(self, user_id: int, default: GroupInvitePolicy) -> GroupInvitePolicy:
        """A user's "who can add me to groups" setting (``default`` if they never chose)."""
        return await self._db.read(_privacy, user_id, default)

    async def set_privacy(self, user_id: int, group_invites: GroupInvitePolicy, *, now: int) -> None:
        """Change a user's "who can add me to groups" setting."""
        await self._db.write(_set_privacy, self._db.dialect, user_id, group_invites, now)

    async def share_a_group(self, a: int, b: int) -> bool:
        """Whether two users are both active members of some group."""
        return await self._db.read(_share_a_group, a, b)

    async def managers(self, group_id: int) -> list[int]:
        """The owner and admins."""
        return await self._db.read(_managers, group_id)
