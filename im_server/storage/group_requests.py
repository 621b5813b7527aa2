"""Asking to join and being invited: join requests and their approval, the invitations a user may see
and answer (accept, decline, withdraw), and a user's "who can add me to groups" setting."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, String, and_, insert, literal, or_, select, update
from sqlalchemy import cast as sql_cast

from im_schema.content import SystemEvent
from im_schema.errors import ErrorCode
from im_schema.groups import GroupInvitation, JoinRequest
from im_schema.ids import group_conversation
from im_schema.social import GroupInvitePolicy

from ._util import insert_ignore, ms_to_datetime
from .consent import ConsentLimits, invitation_usable
from .engine import Database
from .group_base import (
    Change,
    _acting,
    _active,
    _active_ids,
    _group_model,
    _group_row,
    _invitation_model,
    _invitations_by_id,
    _invitations_query,
    _join,
    _live_group,
    _share_users,
    _system,
    lock_user,
)
from .group_members import _add
from .group_rules import require
from .tables import blocks, conversations, group_invitations, group_join_requests, groups, members, user_privacy, users
from .users import prefixed_user_columns, user_from_prefixed

__all__ = ["RequestTransactions"]


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


class RequestTransactions:
    """The :class:`~.groups.GroupStore` methods of join requests, invitations and the "who can add me" setting.

    Each runs one transaction of this module: a new operation adds its transaction and its method here."""

    _db: Database

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
