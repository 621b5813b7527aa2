"""A group's life: creating it (with its first members, or invitations where consent is needed), reading
it, changing its name, settings and announcement, and dissolving it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from im_schema.content import SystemEvent
from im_schema.errors import ErrorCode
from im_schema.groups import Group
from im_schema.ids import group_conversation

from .consent import ConsentLimits
from .engine import Database
from .group_base import (
    _DAY,
    Change,
    _acting,
    _active_ids,
    _admit,
    _group_model,
    _group_row,
    _invitations_by_id,
    _join,
    _live_group,
    _require_quota,
    _share_users,
    _system,
    _void_invitations,
)
from .group_rules import require
from .tables import conversations, groups, members

__all__ = ["LifecycleTransactions"]


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


class LifecycleTransactions:
    """The :class:`~.groups.GroupStore` methods of a group's life (create, read, settings, announcement, dissolve).

    Each runs one transaction of this module: a new operation adds its transaction and its method here."""

    _db: Database

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

    async def dissolve(self, group_id: int, actor: int, *, now: int) -> Change:
        """End the group (owner)."""
        return await self._db.write(_dissolve, group_id, actor, now)

    async def update(self, group_id: int, actor: int, changes: dict[str, Any], *, now: int) -> Change:
        """Rename or change settings (owner and admins)."""
        return await self._db.write(_update_group, group_id, actor, changes, now)

    async def announce(self, group_id: int, actor: int, text: str, *, now: int) -> Change:
        """Set the announcement (owner and admins)."""
        return await self._db.write(_announce, group_id, actor, text, now)
