"""Membership: member lists and rosters, adding, leaving and kicking members, ownership and admin
roles, muting, and a member's own nickname and remark."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from im_schema.content import SystemEvent
from im_schema.errors import ErrorCode
from im_schema.groups import Role
from im_schema.ids import group_conversation
from im_schema.models import User

from .consent import ConsentLimits
from .engine import Database
from .group_base import (
    Change,
    MemberRow,
    Roster,
    _acting,
    _active,
    _active_ids,
    _admit,
    _decisions,
    _group_model,
    _group_row,
    _invitations_by_id,
    _join,
    _live_group,
    _member_row,
    _refuse_blocked,
    _share_users,
    _stamp,
    _system,
    _void_invitations,
)
from .group_rules import require, require_may_invite, require_may_leave, require_not_owner, require_outranks
from .tables import conversations, groups, members, users
from .users import PUBLIC_USER_COLUMNS, user_from_row

__all__ = ["MembershipTransactions"]


def _members_page(conn: Connection, group_id: int, after: int, limit: int) -> tuple[list[tuple[User, Any]], bool]:
    rows = conn.execute(
        select(members.c.role, members.c.nickname, members.c.muted_until, members.c.joined_at, *PUBLIC_USER_COLUMNS)
        .join(users, users.c.id == members.c.user_id)
        .where(
            members.c.conversation_id == group_conversation(group_id),
            members.c.left_seq.is_(None),
            members.c.user_id > after,
        )
        .order_by(members.c.user_id)
        .limit(limit + 1)
    ).all()
    return [(user_from_row(row), row) for row in rows[:limit]], len(rows) > limit


def _roster(conn: Connection, conversation: str, recent_since: int) -> Roster | None:
    version = conn.execute(
        select(conversations.c.members_version).where(conversations.c.id == conversation)
    ).scalar_one_or_none()
    if version is None:
        return None
    rows = conn.execute(
        select(members.c.user_id, members.c.joined_seq, members.c.left_seq).where(
            members.c.conversation_id == conversation,
            (members.c.left_seq.is_(None)) | (members.c.updated_at >= recent_since),
        )
    ).all()
    return Roster(version, {row.user_id: (row.joined_seq, row.left_seq) for row in rows})


def _add(
    conn: Connection,
    group_id: int,
    actor: int,
    user_ids: list[int],
    via: str,
    limit: int,
    now: int,
    consent: ConsentLimits,
) -> Change:
    group = _live_group(conn, group_id, lock=True)
    conversation = group_conversation(group_id)
    if via == "invite":
        inviter = _acting(conn, conversation, actor)
        require_may_invite(inviter.role, allow_member_invite=group.allow_member_invite)
    existing = _share_users(conn, [actor, *user_ids])
    current = _active_ids(conn, conversation)
    candidates = sorted((existing & set(user_ids)) - current)
    invited: list[int] = []
    if via == "invite":
        new, invited = _admit(conn, group_id, actor, [user for user in candidates if user != actor], consent, now)
    else:
        if via == "approval":
            _refuse_blocked(_decisions(conn, actor, [user for user in candidates if user != actor], consent))
        new = candidates
    invitations = _invitations_by_id(conn, invited, now)
    if not new:
        return Change(None, frozenset(), _group_model(conn, group, actor), invitations)
    require(len(current) + len(new) <= limit, ErrorCode.GROUP_FULL, f"a group has at most {limit} members")
    max_seq = conn.execute(select(conversations.c.max_seq).where(conversations.c.id == conversation)).scalar_one()
    # New members see the announcement of their own arrival; what came before only if the group allows it.
    joined_seq = 0 if group.history_visible else max_seq
    _join(conn, conversation, new, "member", joined_seq, now)
    written = _system(
        conn, conversation, actor, SystemEvent.MEMBERS_JOINED, {"users": new, "via": via}, now, roster=True
    )
    return Change(written, frozenset(current | set(new)), _group_model(conn, group, actor), invitations)


def _remove(conn: Connection, group_id: int, actor: int, user_id: int, now: int) -> Change:
    _live_group(conn, group_id)
    conversation = group_conversation(group_id)
    target = _active(conn, conversation, user_id)
    require(target is not None, ErrorCode.NOT_A_MEMBER, "that user is not a member of this group")
    assert target is not None
    if actor == user_id:
        require_may_leave(target.role)
        event = SystemEvent.MEMBER_LEFT
    else:
        kicker = _acting(conn, conversation, actor, at_least="admin")
        require_outranks(kicker.role, target.role, "remove")
        event = SystemEvent.MEMBER_KICKED
    recipients = _active_ids(conn, conversation)
    written = _system(conn, conversation, actor, event, {"user": user_id}, now, roster=True)
    conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
        .values(left_seq=written.seq, role="member", updated_at=now)
    )
    _void_invitations(conn, group_id, now, inviter=user_id)  # one gone cannot keep inviting
    return Change(written, frozenset(recipients))


def _transfer(conn: Connection, group_id: int, actor: int, new_owner: int, now: int) -> Change:
    _live_group(conn, group_id)
    conversation = group_conversation(group_id)
    _acting(conn, conversation, actor, at_least="owner")
    require(new_owner != actor, ErrorCode.BAD_REQUEST, "you own this group already")
    require(
        _active(conn, conversation, new_owner) is not None,
        ErrorCode.NOT_A_MEMBER,
        "that user is not a member of this group",
    )
    conn.execute(update(groups).where(groups.c.id == group_id).values(owner_id=new_owner))
    for user_id, role in ((actor, "admin"), (new_owner, "owner")):
        conn.execute(
            update(members)
            .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
            .values(role=role, updated_at=now)
        )
    written = _system(conn, conversation, actor, SystemEvent.OWNER_TRANSFERRED, {"user": new_owner}, now, roster=False)
    return Change(
        written, frozenset(_active_ids(conn, conversation)), _group_model(conn, _group_row(conn, group_id), actor)
    )


def _set_admin(conn: Connection, group_id: int, actor: int, user_id: int, admin: bool, now: int) -> Change:
    _live_group(conn, group_id)
    conversation = group_conversation(group_id)
    _acting(conn, conversation, actor, at_least="owner")
    target = _active(conn, conversation, user_id)
    require(target is not None, ErrorCode.NOT_A_MEMBER, "that user is not a member of this group")
    assert target is not None
    require_not_owner(target.role)
    role: Role = "admin" if admin else "member"
    if target.role == role:
        return Change(None, frozenset())
    conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
        .values(role=role, updated_at=now)
    )
    event = SystemEvent.ADMIN_ADDED if admin else SystemEvent.ADMIN_REMOVED
    written = _system(conn, conversation, actor, event, {"user": user_id}, now, roster=False)
    return Change(written, frozenset(_active_ids(conn, conversation)))


def _mute(conn: Connection, group_id: int, actor: int, user_id: int, until: int | None, now: int) -> Change:
    _live_group(conn, group_id)
    conversation = group_conversation(group_id)
    muter = _acting(conn, conversation, actor, at_least="admin")
    target = _active(conn, conversation, user_id)
    require(target is not None, ErrorCode.NOT_A_MEMBER, "that user is not a member of this group")
    assert target is not None
    require_outranks(muter.role, target.role, "mute")
    if until is not None and until <= now:
        until = None
    conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
        .values(muted_until=until, updated_at=now)
    )
    event = SystemEvent.MEMBER_MUTED if until is not None else SystemEvent.MEMBER_UNMUTED
    data: dict[str, Any] = {"user": user_id}
    if until is not None:
        data["until"] = _stamp(until)
    written = _system(conn, conversation, actor, event, data, now, roster=False)
    return Change(written, frozenset(_active_ids(conn, conversation)))


def _set_mine(
    conn: Connection, group_id: int, user_id: int, nickname: str | None, remark: str | None, now: int
) -> Change:
    group = _group_row(conn, group_id)
    conversation = group_conversation(group_id)
    mine = _member_row(conn, conversation, user_id)
    require(mine is not None, ErrorCode.NOT_A_MEMBER, "you are not a member of this group")
    values: dict[str, Any] = {}
    if remark is not None:
        values["remark"] = remark or None
    written = None
    if nickname is not None:
        require(
            mine is not None and mine.left_seq is None and not group.dissolved,
            ErrorCode.NOT_A_MEMBER,
            "you are not a member of this group",
        )
        values["nickname"] = nickname or None
    if values:
        conn.execute(
            update(members)
            .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
            .values(**values)
        )
    if nickname is not None:
        written = _system(
            conn, conversation, user_id, SystemEvent.NICKNAME_SET, {"nickname": nickname or None}, now, roster=False
        )
    recipients = frozenset(_active_ids(conn, conversation)) if written else frozenset()
    return Change(written, recipients, _group_model(conn, group, user_id))


def _managers(conn: Connection, group_id: int) -> list[int]:
    return list(
        conn.execute(
            select(members.c.user_id).where(
                members.c.conversation_id == group_conversation(group_id),
                members.c.left_seq.is_(None),
                members.c.role.in_(["owner", "admin"]),
            )
        ).scalars()
    )


def _share_a_group(conn: Connection, a: int, b: int) -> bool:
    mine = members.alias("mine")
    theirs = members.alias("theirs")
    row = conn.execute(
        select(mine.c.conversation_id)
        .join(theirs, theirs.c.conversation_id == mine.c.conversation_id)
        .where(
            mine.c.user_id == a,
            theirs.c.user_id == b,
            mine.c.left_seq.is_(None),
            theirs.c.left_seq.is_(None),
            mine.c.conversation_id.like("g:%"),
        )
        .limit(1)
    ).first()
    return row is not None


class MembershipTransactions:
    """The :class:`~.groups.GroupStore` methods of membership (members, rosters, adding and removing,
    roles, mutes, one's own nickname).

    Each runs one transaction of this module: a new operation adds its transaction and its method here."""

    _db: Database

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

    async def share_a_group(self, a: int, b: int) -> bool:
        """Whether two users are both active members of some group."""
        return await self._db.read(_share_a_group, a, b)

    async def managers(self, group_id: int) -> list[int]:
        """The owner and admins."""
        return await self._db.read(_managers, group_id)
