"""What every group transaction shares: the membership rows and the :class:`Change` a transaction
returns, reading groups and members (locked where a race matters), joining members, the system message
of a change, and the consent checks (with the invitations they make or void) applied when users are put
into a group.

Consent (:mod:`im_server.storage.consent`) is checked in the transaction that adds members: it locks
the group's row and shares a lock on the users involved, and blocking or changing one's privacy setting
takes that user's row exclusively (:func:`lock_user`), so a block cannot slip in between the check and
the add (on SQLite every write transaction runs alone anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.orm import aliased

from im_schema.content import SystemEvent
from im_schema.errors import ErrorCode
from im_schema.groups import Group, GroupInvitation, Role
from im_schema.ids import group_conversation
from im_schema.models import format_timestamp
from im_schema.social import GroupInvitePolicy

from ..errors import Refusal
from ._util import ms_to_datetime
from .consent import Admission, ConsentLimits, Relation, admission, quota_wait
from .group_rules import require, require_rank
from .message_rows import Written, append_system
from .tables import blocks, friends, group_invitations, groups, members, user_privacy, users
from .users import prefixed_user_columns, user_from_prefixed

__all__ = ["Change", "MemberRow", "Roster", "lock_user"]


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


def _void_invitations(conn: Connection, group_id: int, now: int, *, inviter: int | None = None) -> None:
    """Withdraw the group's pending invitations (or those of one inviter)."""
    query = update(group_invitations).where(
        group_invitations.c.group_id == group_id, group_invitations.c.status == "pending"
    )
    if inviter is not None:
        query = query.where(group_invitations.c.inviter_id == inviter)
    conn.execute(query.values(status="withdrawn", decided_at=now))
