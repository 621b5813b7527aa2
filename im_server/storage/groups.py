"""Groups and their members.

Every change is one transaction that also appends a system message to the group's conversation and,
when membership changes, bumps the conversation's ``members_version``. Role rules are checked in that
same transaction, so two admins acting at once cannot both win.

Consent (:mod:`im_server.storage.consent`) is checked in the transaction that adds members too: it locks
the group's row and shares a lock on the users involved, and blocking or changing one's privacy setting
takes that user's row exclusively, so a block cannot slip in between the check and the add (on SQLite
every write transaction runs alone anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, String, and_, func, insert, literal, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import aliased

from im_schema.content import SystemEvent
from im_schema.errors import ErrorCode
from im_schema.groups import Group, GroupInvitation, JoinRequest, Role
from im_schema.ids import group_conversation
from im_schema.models import User, format_timestamp
from im_schema.social import GroupInvitePolicy

from ..errors import Refusal
from ._util import insert_ignore, ms_to_datetime
from .consent import Admission, ConsentLimits, Relation, admission, invitation_usable, quota_wait
from .engine import Database
from .group_rules import (
    require,
    require_may_invite,
    require_may_leave,
    require_not_owner,
    require_outranks,
    require_rank,
)
from .message_rows import Written, append_system
from .tables import (
    blocks,
    conversations,
    friends,
    group_invitations,
    group_join_requests,
    groups,
    members,
    user_privacy,
    users,
)
from .users import PUBLIC_USER_COLUMNS, prefixed_user_columns, user_from_prefixed, user_from_row

__all__ = ["Change", "GroupRuleError", "GroupStore", "MemberRow", "Roster", "lock_user"]

GroupRuleError = Refusal
"""The old name of :class:`im_server.errors.Refusal`, which every group rule raises."""

_HOUR = 3600 * 1000
_DAY = 24 * _HOUR


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One membership, current or past."""

    user_id: int
    role: Role
    joined_seq: int
    left_seq: int | None
    muted_until: int | None


@dataclass(frozen=True, slots=True)
class Roster:
    """Who receives a group's messages: active members, and recent leavers (for messages sent before they
    left); ``version`` is the conversation's ``members_version``."""

    version: int
    members: dict[int, tuple[int, int | None]]
    """``user -> (joined_seq, left_seq)``."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a change did: its system message (to deliver) and who should receive it."""

    written: Written | None
    recipients: frozenset[int]
    group: Group | None = None
    invitations: tuple[GroupInvitation, ...] = ()
    """Invitations the change made or answered, whose invitees' devices are told (hidden ones left out)."""


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


# Helpers ------------------------------------------------------------------------------------------


def _system(
    conn: Connection, conversation: str, actor: int, event: SystemEvent, data: dict[str, Any], now: int, *, roster: bool
) -> Written:
    return append_system(conn, conversation, actor, event, data, now, roster=roster)


def _stamp(ms: int) -> str:
    return format_timestamp(ms_to_datetime(ms))


def _group_row(conn: Connection, group_id: int) -> Any:
    row = conn.execute(select(groups).where(groups.c.id == group_id)).one_or_none()
    require(row is not None, ErrorCode.GROUP_NOT_FOUND, "no such group")
    return row


def _live_group(conn: Connection, group_id: int, *, lock: bool = False) -> Any:
    if lock:
        # Serializes the changes of one group's membership and invitations (PostgreSQL; SQLite's writes
        # are serial already), so that "one pending invitation per user" and the limits hold.
        row = conn.execute(select(groups).where(groups.c.id == group_id).with_for_update()).one_or_none()
        require(row is not None, ErrorCode.GROUP_NOT_FOUND, "no such group")
    else:
        row = _group_row(conn, group_id)
    assert row is not None
    require(not row.dissolved, ErrorCode.GROUP_DISSOLVED, "the group was dissolved")
    return row


def _member_row(conn: Connection, conversation: str, user_id: int) -> MemberRow | None:
    row = conn.execute(
        select(members).where(members.c.conversation_id == conversation, members.c.user_id == user_id)
    ).one_or_none()
    if row is None:
        return None
    return MemberRow(row.user_id, row.role, row.joined_seq, row.left_seq, row.muted_until)


def _active(conn: Connection, conversation: str, user_id: int) -> MemberRow | None:
    row = _member_row(conn, conversation, user_id)
    return row if row is not None and row.left_seq is None else None


def _acting(conn: Connection, conversation: str, actor: int, *, at_least: Role = "member") -> MemberRow:
    row = _active(conn, conversation, actor)
    require_rank(row.role if row is not None else None, at_least)
    assert row is not None
    return row


def _active_ids(conn: Connection, conversation: str) -> set[int]:
    rows = conn.execute(
        select(members.c.user_id).where(members.c.conversation_id == conversation, members.c.left_seq.is_(None))
    ).scalars()
    return set(rows)


def _count(conn: Connection, conversation: str) -> int:
    return int(
        conn.execute(
            select(func.count()).where(members.c.conversation_id == conversation, members.c.left_seq.is_(None))
        ).scalar_one()
    )


def _group_model(conn: Connection, row: Any, viewer: int | None) -> Group:
    conversation = group_conversation(row.id)
    mine = None
    if viewer is not None:
        mine = conn.execute(
            select(members.c.role, members.c.nickname, members.c.remark, members.c.left_seq).where(
                members.c.conversation_id == conversation, members.c.user_id == viewer
            )
        ).one_or_none()
    active = mine is not None and mine.left_seq is None
    return Group(
        id=row.id,
        conversation=conversation,
        name=row.name,
        owner=row.owner_id,
        join_policy=row.join_policy,
        allow_member_invite=row.allow_member_invite,
        history_visible=row.history_visible,
        muted_all=row.muted_all,
        announcement=row.announcement,
        announcement_at=ms_to_datetime(row.announcement_at) if row.announcement_at else None,
        member_count=_count(conn, conversation),
        dissolved=row.dissolved,
        created_at=ms_to_datetime(row.created_at),
        my_role=mine.role if active and mine else None,
        my_nickname=mine.nickname if active and mine else None,
        my_remark=mine.remark if mine else None,
    )


def _join(conn: Connection, conversation: str, user_ids: Iterable[int], role: Role, joined_seq: int, now: int) -> None:
    for user_id in user_ids:
        existing = _member_row(conn, conversation, user_id)
        values = {
            "role": role,
            "left_seq": None,
            "joined_seq": joined_seq,
            "read_seq": joined_seq,
            "muted_until": None,
            "nickname": None,
            "joined_at": now,
            "updated_at": now,
        }
        if existing is None:
            conn.execute(insert(members).values(conversation_id=conversation, user_id=user_id, **values))
        else:
            conn.execute(
                update(members)
                .where(members.c.conversation_id == conversation, members.c.user_id == user_id)
                .values(**values)
            )


# Transactions -------------------------------------------------------------------------------------


def _create(
    conn: Connection,
    owner: int,
    name: str,
    member_ids: list[int],
    join_policy: str,
    allow_member_invite: bool,
    history_visible: bool,
    limit: int,
    now: int,
    consent: ConsentLimits,
) -> Change:
    existing = _share_users(conn, [owner, *member_ids])
    _require_quota(
        conn.execute(
            select(groups.c.created_at).where(groups.c.creator_id == owner, groups.c.created_at > now - _DAY)
        ).scalars(),
        limit=consent.creates_per_day,
        cost=1,
        window=_DAY,
        now=now,
        what=f"at most {consent.creates_per_day} groups a day may be created",
    )
    candidates = sorted((existing & set(member_ids)) - {owner})
    group_id = conn.execute(
        insert(groups)
        .values(
            name=name,
            owner_id=owner,
            join_policy=join_policy,
            allow_member_invite=allow_member_invite,
            history_visible=history_visible,
            muted_all=False,
            announcement="",
            dissolved=False,
            created_at=now,
            creator_id=owner,
        )
        .returning(groups.c.id)
    ).scalar_one()
    others, invited = _admit(conn, group_id, owner, candidates, consent, now)
    require(len(others) + 1 <= limit, ErrorCode.GROUP_FULL, f"a group has at most {limit} members")
    conversation = group_conversation(group_id)
    conn.execute(
        insert(conversations).values(
            id=conversation, kind="group", max_seq=0, created_at=now, last_at=now, members_version=0
        )
    )
    _join(conn, conversation, [owner], "owner", 0, now)
    _join(conn, conversation, others, "member", 0, now)
    written = _system(
        conn,
        conversation,
        owner,
        SystemEvent.GROUP_CREATED,
        {"name": name, "members": [owner, *others]},
        now,
        roster=True,
    )
    group = _group_model(conn, _group_row(conn, group_id), owner)
    return Change(written, frozenset([owner, *others]), group, _invitations_by_id(conn, invited, now))


def _group(conn: Connection, group_id: int, viewer: int | None) -> Group | None:
    row = conn.execute(select(groups).where(groups.c.id == group_id)).one_or_none()
    return None if row is None else _group_model(conn, row, viewer)


def _groups_of(conn: Connection, user_id: int) -> list[Group]:
    ids = conn.execute(
        select(members.c.conversation_id).where(
            members.c.user_id == user_id, members.c.left_seq.is_(None), members.c.conversation_id.like("g:%")
        )
    ).scalars()
    rows = conn.execute(select(groups).where(groups.c.id.in_([int(c[2:]) for c in ids])).order_by(groups.c.id)).all()
    return [_group_model(conn, row, user_id) for row in rows]


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


def _dissolve(conn: Connection, group_id: int, actor: int, now: int) -> Change:
    _live_group(conn, group_id)
    conversation = group_conversation(group_id)
    _acting(conn, conversation, actor, at_least="owner")
    recipients = _active_ids(conn, conversation)
    written = _system(conn, conversation, actor, SystemEvent.GROUP_DISSOLVED, {}, now, roster=True)
    conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation, members.c.left_seq.is_(None))
        .values(left_seq=written.seq, updated_at=now)
    )
    conn.execute(update(groups).where(groups.c.id == group_id).values(dissolved=True))
    _void_invitations(conn, group_id, now)
    return Change(written, frozenset(recipients))


def _update_group(conn: Connection, group_id: int, actor: int, changes: dict[str, Any], now: int) -> Change:
    group = _live_group(conn, group_id)
    conversation = group_conversation(group_id)
    _acting(conn, conversation, actor, at_least="admin")
    changed = {key: value for key, value in changes.items() if getattr(group, key) != value}
    if not changed:
        return Change(None, frozenset(), _group_model(conn, group, actor))
    conn.execute(update(groups).where(groups.c.id == group_id).values(**changed))
    written = _system(conn, conversation, actor, SystemEvent.GROUP_UPDATED, changed, now, roster=False)
    return Change(
        written, frozenset(_active_ids(conn, conversation)), _group_model(conn, _group_row(conn, group_id), actor)
    )


def _announce(conn: Connection, group_id: int, actor: int, text: str, now: int) -> Change:
    _live_group(conn, group_id)
    conversation = group_conversation(group_id)
    _acting(conn, conversation, actor, at_least="admin")
    conn.execute(update(groups).where(groups.c.id == group_id).values(announcement=text, announcement_at=now))
    written = _system(conn, conversation, actor, SystemEvent.ANNOUNCEMENT_SET, {"text": text}, now, roster=False)
    return Change(
        written, frozenset(_active_ids(conn, conversation)), _group_model(conn, _group_row(conn, group_id), actor)
    )


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


def _request_join(conn: Connection, group_id: int, user_id: int, message: str, now: int) -> JoinRequest:
    _live_group(conn, group_id)
    require(
        _active(conn, group_conversation(group_id), user_id) is None,
        ErrorCode.ALREADY_MEMBER,
        "you are a member already",
    )
    existing = conn.execute(
        select(group_join_requests.c.id).where(
            group_join_requests.c.group_id == group_id, group_join_requests.c.user_id == user_id
        )
    ).scalar_one_or_none()
    if existing is None:
        existing = conn.execute(
            insert(group_join_requests)
            .values(group_id=group_id, user_id=user_id, message=message, status="pending", created_at=now)
            .returning(group_join_requests.c.id)
        ).scalar_one()
    else:
        conn.execute(
            update(group_join_requests)
            .where(group_join_requests.c.id == existing)
            .values(message=message, status="pending", created_at=now, decided_by=None, decided_at=None)
        )
    request = _join_request(conn, existing)
    assert request is not None
    return request


def _join_request(conn: Connection, request_id: int) -> JoinRequest | None:
    row = conn.execute(
        select(group_join_requests, *prefixed_user_columns(users, "u_"))
        .join(users, users.c.id == group_join_requests.c.user_id)
        .where(group_join_requests.c.id == request_id)
    ).one_or_none()
    return None if row is None else _join_request_model(row)


def _join_request_model(row: Any) -> JoinRequest:
    return JoinRequest(
        id=row.id,
        group_id=row.group_id,
        user=user_from_prefixed(row, "u_"),
        message=row.message,
        status=row.status,
        created_at=ms_to_datetime(row.created_at),
    )


def _join_requests(conn: Connection, group_id: int, actor: int) -> list[JoinRequest]:
    _group_row(conn, group_id)
    _acting(conn, group_conversation(group_id), actor, at_least="admin")
    rows = conn.execute(
        select(group_join_requests, *prefixed_user_columns(users, "u_"))
        .join(users, users.c.id == group_join_requests.c.user_id)
        .where(group_join_requests.c.group_id == group_id, group_join_requests.c.status == "pending")
        .order_by(group_join_requests.c.created_at, group_join_requests.c.id)
    ).all()
    return [_join_request_model(row) for row in rows]


def _decide_join(
    conn: Connection, group_id: int, request_id: int, actor: int, approve: bool, limit: int, now: int
) -> Change:
    _live_group(conn, group_id)
    _acting(conn, group_conversation(group_id), actor, at_least="admin")
    row = conn.execute(
        select(group_join_requests).where(
            group_join_requests.c.id == request_id,
            group_join_requests.c.group_id == group_id,
            group_join_requests.c.status == "pending",
        )
    ).one_or_none()
    require(row is not None, ErrorCode.REQUEST_NOT_FOUND, "no such pending request")
    assert row is not None
    conn.execute(
        update(group_join_requests)
        .where(group_join_requests.c.id == request_id)
        .values(status="approved" if approve else "rejected", decided_by=actor, decided_at=now)
    )
    if not approve:
        return Change(None, frozenset())
    return _add(conn, group_id, actor, [row.user_id], "approval", limit, now, ConsentLimits())


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


# Consent ------------------------------------------------------------------------------------------


def lock_user(conn: Connection, user_id: int) -> None:
    """Take a user's row exclusively before changing what consent depends on (their blocks, their privacy
    setting): an add that holds a shared lock on the row has finished first, or starts after (PostgreSQL;
    SQLite's writes are serial anyway)."""
    conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update(key_share=True))


def _share_users(conn: Connection, user_ids: Iterable[int]) -> set[int]:
    """The ids that exist, with a shared lock on their rows (in id order, so two adds never deadlock)."""
    ids = sorted(set(user_ids))
    if not ids:
        return set()
    return set(
        conn.execute(
            select(users.c.id).where(users.c.id.in_(ids)).order_by(users.c.id).with_for_update(read=True)
        ).scalars()
    )


def _decisions(conn: Connection, actor: int, targets: list[int], consent: ConsentLimits) -> dict[int, Admission]:
    if not targets:
        return {}
    rows = conn.execute(
        select(blocks.c.user_id, blocks.c.blocked_id).where(
            or_(
                and_(blocks.c.user_id == actor, blocks.c.blocked_id.in_(targets)),
                and_(blocks.c.user_id.in_(targets), blocks.c.blocked_id == actor),
            )
        )
    ).all()
    blocked_by_actor = {row.blocked_id for row in rows if row.user_id == actor}
    blocking_actor = {row.user_id for row in rows if row.blocked_id == actor}
    friends_of_actor = set(
        conn.execute(
            select(friends.c.user_id).where(friends.c.user_id.in_(targets), friends.c.friend_id == actor)
        ).scalars()
    )
    policies: dict[int, GroupInvitePolicy] = {
        row.user_id: cast(GroupInvitePolicy, row.group_invites)
        for row in conn.execute(
            select(user_privacy.c.user_id, user_privacy.c.group_invites).where(user_privacy.c.user_id.in_(targets))
        )
    }
    return {
        target: admission(
            Relation(
                actor_blocked_target=target in blocked_by_actor,
                target_blocked_actor=target in blocking_actor,
                friends=target in friends_of_actor,
                policy=policies.get(target, consent.default_policy),
            )
        )
        for target in targets
    }


def _refuse_blocked(decisions: dict[int, Admission]) -> None:
    refused = sorted(user for user, decision in decisions.items() if decision == "refuse")
    require(
        not refused,
        ErrorCode.USER_BLOCKED,
        f"you blocked user {', '.join(map(str, refused))}: unblock them first",
    )


def _require_quota(recent: Iterable[int], *, limit: int, cost: int, window: int, now: int, what: str) -> None:
    wait = quota_wait(list(recent), limit=limit, cost=cost, window=window, now=now)
    if wait:
        raise Refusal(ErrorCode.RATE_LIMITED, what, retry_after=wait / 1000)


def _admit(
    conn: Connection, group_id: int, actor: int, candidates: list[int], consent: ConsentLimits, now: int
) -> tuple[list[int], list[int]]:
    """Apply the consent rule to users the actor puts into a group (not members yet, not the actor).

    Returns the users to add now and the ids of the new invitations their invitees are told of. Users
    with a pending invitation to the group, and users who declined one within the cool-down, are left
    alone (no new invitation, no notice).
    """
    decisions = _decisions(conn, actor, candidates, consent)
    _refuse_blocked(decisions)
    add = [user for user in candidates if decisions[user] == "add"]
    ask = [user for user in candidates if decisions[user] in ("invite", "hide")]
    if ask:
        invitation = group_invitations.c
        conn.execute(
            update(group_invitations)
            .where(
                invitation.group_id == group_id,
                invitation.invitee_id.in_(ask),
                invitation.status == "pending",
                invitation.expires_at <= now,
            )
            .values(status="expired")
        )
        waiting = set(
            conn.execute(
                select(invitation.invitee_id).where(
                    invitation.group_id == group_id,
                    invitation.invitee_id.in_(ask),
                    or_(
                        invitation.status == "pending",
                        and_(
                            invitation.status == "declined",
                            invitation.decided_at > now - consent.decline_cooldown,
                        ),
                    ),
                )
            ).scalars()
        )
        ask = [user for user in ask if user not in waiting]
    _require_quota(
        conn.execute(
            select(group_invitations.c.created_at).where(
                group_invitations.c.inviter_id == actor, group_invitations.c.created_at > now - _HOUR
            )
        ).scalars(),
        limit=consent.invites_per_hour,
        cost=len(add) + len(ask),
        window=_HOUR,
        now=now,
        what=f"at most {consent.invites_per_hour} users an hour may be added or invited to groups",
    )
    if add:
        # Their consent is given now; invitations they had not answered yet are answered by it.
        conn.execute(
            update(group_invitations)
            .where(
                group_invitations.c.group_id == group_id,
                group_invitations.c.invitee_id.in_(add),
                group_invitations.c.status == "pending",
            )
            .values(status="accepted", decided_at=now)
        )
    told: list[int] = []
    for user in [*add, *ask]:
        status = "accepted" if decisions[user] == "add" else "pending"
        invitation_id = conn.execute(
            insert(group_invitations)
            .values(
                group_id=group_id,
                inviter_id=actor,
                invitee_id=user,
                status=status,
                created_at=now,
                expires_at=now + consent.invitation_ttl,
                decided_at=now if status == "accepted" else None,
            )
            .returning(group_invitations.c.id)
        ).scalar_one()
        if decisions[user] == "invite":
            told.append(invitation_id)
    return add, told


_inviter = aliased(users)
_invitee = aliased(users)


def _invitations_query() -> Any:
    return (
        select(
            group_invitations,
            groups.c.name.label("group_name"),
            *prefixed_user_columns(_inviter, "r_"),
            *prefixed_user_columns(_invitee, "e_"),
        )
        .join(groups, groups.c.id == group_invitations.c.group_id)
        .join(_inviter, _inviter.c.id == group_invitations.c.inviter_id)
        .join(_invitee, _invitee.c.id == group_invitations.c.invitee_id)
    )


def _invitation_model(row: Any, now: int) -> GroupInvitation:
    status = row.status
    if status == "pending" and row.expires_at <= now:
        status = "expired"
    return GroupInvitation(
        id=row.id,
        group_id=row.group_id,
        group_name=row.group_name,
        inviter=user_from_prefixed(row, "r_"),
        invitee=user_from_prefixed(row, "e_"),
        status=status,
        created_at=ms_to_datetime(row.created_at),
        expires_at=ms_to_datetime(row.expires_at),
        decided_at=ms_to_datetime(row.decided_at) if row.decided_at is not None else None,
    )


def _invitations_by_id(conn: Connection, ids: list[int], now: int) -> tuple[GroupInvitation, ...]:
    if not ids:
        return ()
    rows = conn.execute(
        _invitations_query().where(group_invitations.c.id.in_(ids)).order_by(group_invitations.c.id)
    ).all()
    return tuple(_invitation_model(row, now) for row in rows)


def _blocked_between(a: Any, b: Any) -> Any:
    """A condition: a block exists between the users ``a`` and ``b`` (columns), either way."""
    return (
        select(blocks.c.user_id)
        .where(
            or_(
                and_(blocks.c.user_id == a, blocks.c.blocked_id == b),
                and_(blocks.c.user_id == b, blocks.c.blocked_id == a),
            )
        )
        .exists()
    )


def _inviter_active() -> Any:
    return (
        select(members.c.user_id)
        .where(
            members.c.conversation_id == literal("g:", String) + sql_cast(group_invitations.c.group_id, String),
            members.c.user_id == group_invitations.c.inviter_id,
            members.c.left_seq.is_(None),
        )
        .exists()
    )


def _invitations_for(conn: Connection, user_id: int, now: int) -> list[GroupInvitation]:
    rows = conn.execute(
        _invitations_query()
        .where(
            group_invitations.c.invitee_id == user_id,
            group_invitations.c.status == "pending",
            group_invitations.c.expires_at > now,
            groups.c.dissolved.is_(False),
            ~_blocked_between(group_invitations.c.inviter_id, group_invitations.c.invitee_id),
            _inviter_active(),
        )
        .order_by(group_invitations.c.created_at, group_invitations.c.id)
    ).all()
    return [_invitation_model(row, now) for row in rows]


def _invitations_of(conn: Connection, group_id: int, actor: int, now: int) -> list[GroupInvitation]:
    _group_row(conn, group_id)
    me = _acting(conn, group_conversation(group_id), actor)
    query = _invitations_query().where(
        group_invitations.c.group_id == group_id,
        group_invitations.c.status == "pending",
        group_invitations.c.expires_at > now,
    )
    if me.role == "member":
        query = query.where(group_invitations.c.inviter_id == actor)
    rows = conn.execute(query.order_by(group_invitations.c.created_at, group_invitations.c.id)).all()
    return [_invitation_model(row, now) for row in rows]


def _usable_invitation(conn: Connection, invitation_id: int, user_id: int, now: int) -> tuple[Any, Any]:
    """The group (locked) and the pending invitation ``user_id`` may answer, or ``invitation_not_found``."""
    missing = "no such pending invitation"
    group_id = conn.execute(
        select(group_invitations.c.group_id).where(
            group_invitations.c.id == invitation_id, group_invitations.c.invitee_id == user_id
        )
    ).scalar_one_or_none()
    require(group_id is not None, ErrorCode.INVITATION_NOT_FOUND, missing)
    assert group_id is not None
    group = _live_group(conn, group_id, lock=True)
    row = conn.execute(select(group_invitations).where(group_invitations.c.id == invitation_id)).one()
    require(row.status == "pending" and row.expires_at > now, ErrorCode.INVITATION_NOT_FOUND, missing)
    _share_users(conn, [row.inviter_id, user_id])
    between = {
        (block.user_id, block.blocked_id)
        for block in conn.execute(
            select(blocks.c.user_id, blocks.c.blocked_id).where(
                blocks.c.user_id.in_([row.inviter_id, user_id]), blocks.c.blocked_id.in_([row.inviter_id, user_id])
            )
        )
    }
    usable = invitation_usable(
        inviter_blocked_invitee=(row.inviter_id, user_id) in between,
        invitee_blocked_inviter=(user_id, row.inviter_id) in between,
    )
    inviter_active = _active(conn, group_conversation(group.id), row.inviter_id) is not None
    require(usable and inviter_active, ErrorCode.INVITATION_NOT_FOUND, missing)
    return group, row


def _void_invitations(conn: Connection, group_id: int, now: int, *, inviter: int | None = None) -> None:
    """Withdraw the group's pending invitations (or those of one inviter)."""
    query = update(group_invitations).where(
        group_invitations.c.group_id == group_id, group_invitations.c.status == "pending"
    )
    if inviter is not None:
        query = query.where(group_invitations.c.inviter_id == inviter)
    conn.execute(query.values(status="withdrawn", decided_at=now))


def _decide_invitation(conn: Connection, invitation_id: int, status: str, now: int) -> GroupInvitation:
    conn.execute(
        update(group_invitations).where(group_invitations.c.id == invitation_id).values(status=status, decided_at=now)
    )
    return _invitations_by_id(conn, [invitation_id], now)[0]


def _accept_invitation(conn: Connection, invitation_id: int, user_id: int, limit: int, now: int) -> Change:
    group, row = _usable_invitation(conn, invitation_id, user_id, now)
    conversation = group_conversation(group.id)
    if _active(conn, conversation, user_id) is not None:
        invitation = _decide_invitation(conn, invitation_id, "accepted", now)
        return Change(None, frozenset(), _group_model(conn, group, user_id), (invitation,))
    current = _active_ids(conn, conversation)
    require(len(current) + 1 <= limit, ErrorCode.GROUP_FULL, f"a group has at most {limit} members")
    invitation = _decide_invitation(conn, invitation_id, "accepted", now)
    max_seq = conn.execute(select(conversations.c.max_seq).where(conversations.c.id == conversation)).scalar_one()
    _join(conn, conversation, [user_id], "member", 0 if group.history_visible else max_seq, now)
    # Announced as the inviter's add (they are its sender, as for a direct add), made once the invitee said yes.
    written = _system(
        conn,
        conversation,
        row.inviter_id,
        SystemEvent.MEMBERS_JOINED,
        {"users": [user_id], "via": "invitation"},
        now,
        roster=True,
    )
    return Change(written, frozenset(current | {user_id}), _group_model(conn, group, user_id), (invitation,))


def _decline_invitation(conn: Connection, invitation_id: int, user_id: int, now: int) -> GroupInvitation:
    _usable_invitation(conn, invitation_id, user_id, now)
    return _decide_invitation(conn, invitation_id, "declined", now)


def _withdraw_invitation(
    conn: Connection, group_id: int, invitation_id: int, actor: int, now: int
) -> tuple[GroupInvitation, bool]:
    _live_group(conn, group_id, lock=True)
    me = _acting(conn, group_conversation(group_id), actor)
    row = conn.execute(
        select(group_invitations).where(
            group_invitations.c.id == invitation_id,
            group_invitations.c.group_id == group_id,
            group_invitations.c.status == "pending",
            group_invitations.c.expires_at > now,
        )
    ).one_or_none()
    require(
        row is not None and (me.role != "member" or row.inviter_id == actor),
        ErrorCode.INVITATION_NOT_FOUND,
        "no such pending invitation",
    )
    assert row is not None
    told = not conn.execute(select(_blocked_between(row.inviter_id, row.invitee_id))).scalar_one()
    return _decide_invitation(conn, invitation_id, "withdrawn", now), bool(told)


def _privacy(conn: Connection, user_id: int, default: GroupInvitePolicy) -> GroupInvitePolicy:
    value = conn.execute(
        select(user_privacy.c.group_invites).where(user_privacy.c.user_id == user_id)
    ).scalar_one_or_none()
    return cast(GroupInvitePolicy, value) if value is not None else default


def _set_privacy(conn: Connection, dialect: str, user_id: int, group_invites: GroupInvitePolicy, now: int) -> None:
    lock_user(conn, user_id)
    conn.execute(
        insert_ignore(dialect, user_privacy).values(user_id=user_id, group_invites=group_invites, updated_at=now)
    )
    conn.execute(
        update(user_privacy)
        .where(user_privacy.c.user_id == user_id)
        .values(group_invites=group_invites, updated_at=now)
    )
