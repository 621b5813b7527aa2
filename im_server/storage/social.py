"""Friend requests, friendships and blocks."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, insert, or_, select, update
from sqlalchemy.orm import aliased

from im_schema.models import User
from im_schema.social import FriendRequest

from ._util import insert_ignore, ms_to_datetime
from .engine import Database
from .group_base import lock_user
from .tables import blocks, friend_requests, friends, users
from .users import PUBLIC_USER_COLUMNS, prefixed_user_columns, user_from_prefixed, user_from_row

__all__ = ["Friendship", "RequestCooldown", "SocialGraph", "SocialStore"]


class RequestCooldown(Exception):
    """The target declined the sender's request less than the cooldown ago."""

    def __init__(self, wait_ms: int) -> None:
        super().__init__(f"{wait_ms} ms")
        self.wait_ms = wait_ms


@dataclass(frozen=True, slots=True)
class Friendship:
    """One side of a friendship."""

    user: User
    remark: str | None
    since: int


@dataclass(frozen=True, slots=True)
class SocialGraph:
    """What the send path needs to know about one user: friends, whom they blocked, whether a bot."""

    friends: frozenset[int]
    blocked: frozenset[int]
    is_bot: bool


_from = aliased(users)
_to = aliased(users)


def _request(row: Any) -> FriendRequest:
    return FriendRequest(
        id=row.id,
        from_user=user_from_prefixed(row, "f_"),
        to_user=user_from_prefixed(row, "t_"),
        message=row.message,
        status=row.status,
        created_at=ms_to_datetime(row.created_at),
    )


def _requests_query() -> Any:
    return (
        select(friend_requests, *prefixed_user_columns(_from, "f_"), *prefixed_user_columns(_to, "t_"))
        .join(_from, _from.c.id == friend_requests.c.from_user)
        .join(_to, _to.c.id == friend_requests.c.to_user)
    )


class SocialStore:
    """Named transactions on the social graph."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def graph(self, user_id: int) -> SocialGraph:
        """A user's friends and blocks, for the send path's cache."""
        return await self._db.read(_graph, user_id)

    async def graphs(self, user_ids: Collection[int]) -> dict[int, SocialGraph]:
        """Many users' graphs in one read (three queries however many users): the cache's batched misses.

        A user id with no account gets an empty graph, as :meth:`graph` gives.
        """
        return await self._db.read(_graphs, sorted(set(user_ids)))

    async def request_friend(
        self, from_user: int, to_user: int, message: str, *, now: int, cooldown_ms: int = 0
    ) -> tuple[str, FriendRequest]:
        """Record a request; returns ``("pending" | "accepted", request)``.

        If the other user already asked, the friendship starts at once. A request to someone who blocked
        the sender is recorded but never shown to them. Raises :class:`RequestCooldown` if the target
        declined the sender's request less than ``cooldown_ms`` ago.
        """
        return await self._db.write(_request_friend, self._db.dialect, from_user, to_user, message, now, cooldown_ms)

    async def requests(self, user_id: int, direction: Literal["incoming", "outgoing"]) -> list[FriendRequest]:
        """Pending requests to or from a user (incoming ones from users they blocked are left out)."""
        return await self._db.read(_pending_requests, user_id, direction)

    async def request(self, request_id: int) -> FriendRequest | None:
        """One request."""
        return await self._db.read(_one_request, request_id)

    async def decide(self, request_id: int, to_user: int, accept: bool, *, now: int) -> FriendRequest | None:
        """Accept or decline a pending request sent to ``to_user``; ``None`` if there is none."""
        return await self._db.write(_decide, self._db.dialect, request_id, to_user, accept, now)

    async def friendships(self, user_id: int, friend_id: int | None = None) -> list[Friendship]:
        """A user's friends (or one of them), with the user's remarks."""
        return await self._db.read(_friendships, user_id, friend_id)

    async def set_remark(self, user_id: int, friend_id: int, remark: str | None) -> bool:
        """Set my remark for a friend; ``False`` if we are not friends."""
        return await self._db.write(_set_remark, user_id, friend_id, remark)

    async def unfriend(self, user_id: int, friend_id: int) -> bool:
        """End a friendship on both sides; ``False`` if there was none."""
        return await self._db.write(_unfriend, user_id, friend_id)

    async def block(self, user_id: int, blocked_id: int, *, now: int) -> None:
        """Block a user (idempotent); their pending requests to me are declined."""
        await self._db.write(_block, self._db.dialect, user_id, blocked_id, now)

    async def unblock(self, user_id: int, blocked_id: int) -> bool:
        """Lift a block; ``False`` if there was none."""
        return await self._db.write(_unblock, user_id, blocked_id)

    async def blocked(self, user_id: int) -> list[User]:
        """The users someone blocked."""
        return await self._db.read(_blocked_users, user_id)


# Transactions -------------------------------------------------------------------------------------


def _graph(conn: Connection, user_id: int) -> SocialGraph:
    friend_ids = conn.execute(select(friends.c.friend_id).where(friends.c.user_id == user_id)).scalars().all()
    blocked_ids = conn.execute(select(blocks.c.blocked_id).where(blocks.c.user_id == user_id)).scalars().all()
    is_bot = conn.execute(select(users.c.is_bot).where(users.c.id == user_id)).scalar_one_or_none()
    # Most users have no friends or blocks: share one empty set (an empty frozenset costs 216 bytes, and
    # an API node caches the graph of every connected user).
    return SocialGraph(frozenset(friend_ids) or _NOBODY, frozenset(blocked_ids) or _NOBODY, bool(is_bot))


_NOBODY: frozenset[int] = frozenset()

_CHUNK = 500
"""User ids per ``IN`` list (SQLite allows 32766 bound parameters; keep statements small anyway)."""


def _graphs(conn: Connection, user_ids: list[int]) -> dict[int, SocialGraph]:
    friend_ids: dict[int, list[int]] = {}
    blocked_ids: dict[int, list[int]] = {}
    bots: set[int] = set()
    for start in range(0, len(user_ids), _CHUNK):
        chunk = user_ids[start : start + _CHUNK]
        for user_id, friend_id in conn.execute(
            select(friends.c.user_id, friends.c.friend_id).where(friends.c.user_id.in_(chunk))
        ).all():
            friend_ids.setdefault(user_id, []).append(friend_id)
        for user_id, blocked_id in conn.execute(
            select(blocks.c.user_id, blocks.c.blocked_id).where(blocks.c.user_id.in_(chunk))
        ).all():
            blocked_ids.setdefault(user_id, []).append(blocked_id)
        bots.update(conn.execute(select(users.c.id).where(users.c.id.in_(chunk), users.c.is_bot)).scalars().all())
    return {
        user_id: SocialGraph(
            frozenset(friend_ids.get(user_id, ())) or _NOBODY,
            frozenset(blocked_ids.get(user_id, ())) or _NOBODY,
            user_id in bots,
        )
        for user_id in user_ids
    }


def _befriend(conn: Connection, dialect: str, a: int, b: int, now: int) -> None:
    conn.execute(
        insert_ignore(dialect, friends),
        [
            {"user_id": a, "friend_id": b, "remark": None, "created_at": now},
            {"user_id": b, "friend_id": a, "remark": None, "created_at": now},
        ],
    )


def _request_friend(
    conn: Connection, dialect: str, from_user: int, to_user: int, message: str, now: int, cooldown_ms: int
) -> tuple[str, FriendRequest]:
    reverse = conn.execute(
        select(friend_requests.c.id).where(
            friend_requests.c.from_user == to_user,
            friend_requests.c.to_user == from_user,
            friend_requests.c.status == "pending",
        )
    ).scalar_one_or_none()
    if reverse is not None:
        conn.execute(
            update(friend_requests).where(friend_requests.c.id == reverse).values(status="accepted", updated_at=now)
        )
        _befriend(conn, dialect, from_user, to_user, now)
        request = _one_request(conn, reverse)
        assert request is not None
        return "accepted", request
    found = conn.execute(
        select(friend_requests.c.id, friend_requests.c.status, friend_requests.c.updated_at).where(
            friend_requests.c.from_user == from_user, friend_requests.c.to_user == to_user
        )
    ).one_or_none()
    if found is not None and found.status == "declined" and now - found.updated_at < cooldown_ms:
        raise RequestCooldown(found.updated_at + cooldown_ms - now)
    existing = found.id if found is not None else None
    if existing is None:
        existing = conn.execute(
            insert(friend_requests)
            .values(
                from_user=from_user,
                to_user=to_user,
                message=message,
                status="pending",
                created_at=now,
                updated_at=now,
            )
            .returning(friend_requests.c.id)
        ).scalar_one()
    else:
        conn.execute(
            update(friend_requests)
            .where(friend_requests.c.id == existing)
            .values(message=message, status="pending", created_at=now, updated_at=now)
        )
    request = _one_request(conn, existing)
    assert request is not None
    return "pending", request


def _one_request(conn: Connection, request_id: int) -> FriendRequest | None:
    row = conn.execute(_requests_query().where(friend_requests.c.id == request_id)).one_or_none()
    return None if row is None else _request(row)


def _pending_requests(conn: Connection, user_id: int, direction: str) -> list[FriendRequest]:
    query = _requests_query().where(friend_requests.c.status == "pending")
    if direction == "incoming":
        hidden = select(blocks.c.blocked_id).where(blocks.c.user_id == user_id)
        query = query.where(friend_requests.c.to_user == user_id, friend_requests.c.from_user.not_in(hidden))
    else:
        query = query.where(friend_requests.c.from_user == user_id)
    rows = conn.execute(query.order_by(friend_requests.c.created_at.desc(), friend_requests.c.id.desc())).all()
    return [_request(row) for row in rows]


def _decide(
    conn: Connection, dialect: str, request_id: int, to_user: int, accept: bool, now: int
) -> FriendRequest | None:
    row = conn.execute(
        select(friend_requests).where(
            friend_requests.c.id == request_id,
            friend_requests.c.to_user == to_user,
            friend_requests.c.status == "pending",
        )
    ).one_or_none()
    if row is None:
        return None
    conn.execute(
        update(friend_requests)
        .where(friend_requests.c.id == request_id)
        .values(status="accepted" if accept else "declined", updated_at=now)
    )
    if accept:
        _befriend(conn, dialect, row.from_user, row.to_user, now)
    return _one_request(conn, request_id)


def _friendships(conn: Connection, user_id: int, friend_id: int | None) -> list[Friendship]:
    query = (
        select(
            friends.c.remark, friends.c.created_at.label("since"), *[c for c in users.c if c.name != "password_hash"]
        )
        .join(users, users.c.id == friends.c.friend_id)
        .where(friends.c.user_id == user_id)
        .order_by(users.c.username)
    )
    if friend_id is not None:
        query = query.where(friends.c.friend_id == friend_id)
    return [Friendship(user_from_row(row), row.remark, row.since) for row in conn.execute(query).all()]


def _set_remark(conn: Connection, user_id: int, friend_id: int, remark: str | None) -> bool:
    result = conn.execute(
        update(friends).where(friends.c.user_id == user_id, friends.c.friend_id == friend_id).values(remark=remark)
    )
    return bool(result.rowcount)


def _unfriend(conn: Connection, user_id: int, friend_id: int) -> bool:
    result = conn.execute(
        delete(friends).where(
            or_(
                and_(friends.c.user_id == user_id, friends.c.friend_id == friend_id),
                and_(friends.c.user_id == friend_id, friends.c.friend_id == user_id),
            )
        )
    )
    # A later request starts afresh.
    conn.execute(
        delete(friend_requests).where(
            or_(
                and_(friend_requests.c.from_user == user_id, friend_requests.c.to_user == friend_id),
                and_(friend_requests.c.from_user == friend_id, friend_requests.c.to_user == user_id),
            )
        )
    )
    return bool(result.rowcount)


def _block(conn: Connection, dialect: str, user_id: int, blocked_id: int, now: int) -> None:
    lock_user(conn, user_id)  # waits for group adds that checked consent without this block
    conn.execute(insert_ignore(dialect, blocks).values(user_id=user_id, blocked_id=blocked_id, created_at=now))
    conn.execute(
        update(friend_requests)
        .where(
            friend_requests.c.from_user == blocked_id,
            friend_requests.c.to_user == user_id,
            friend_requests.c.status == "pending",
        )
        .values(status="declined", updated_at=now)
    )


def _unblock(conn: Connection, user_id: int, blocked_id: int) -> bool:
    result = conn.execute(delete(blocks).where(blocks.c.user_id == user_id, blocks.c.blocked_id == blocked_id))
    return bool(result.rowcount)


def _blocked_users(conn: Connection, user_id: int) -> list[User]:
    rows = conn.execute(
        select(*PUBLIC_USER_COLUMNS)
        .join(blocks, blocks.c.blocked_id == users.c.id)
        .where(blocks.c.user_id == user_id)
        .order_by(users.c.username)
    ).all()
    return [user_from_row(row) for row in rows]
