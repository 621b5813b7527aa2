"""Users and their device sessions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from im_schema.models import User

from ._util import ms_to_datetime
from .engine import Database
from .tables import devices, rotated_refresh, users

__all__ = [
    "PUBLIC_USER_COLUMNS",
    "Credentials",
    "DeviceSession",
    "UserStore",
    "UsernameTaken",
    "prefixed_user_columns",
    "session_from_row",
    "user_from_prefixed",
    "user_from_row",
]


class UsernameTaken(Exception):
    """The username is already registered."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user with the password hash, for login only."""

    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class DeviceSession:
    """One logged-in device."""

    user_id: int
    device_id: str
    session_id: str
    refresh_expires_at: int
    created_at: int
    last_seen_at: int


def user_from_row(row: Any) -> User:
    """A :class:`User` from a row with the ``users`` columns."""
    return User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        bio=row.bio,
        avatar=row.avatar,
        is_bot=row.is_bot,
        created_at=ms_to_datetime(row.created_at),
    )


_user = user_from_row

PUBLIC_USER_COLUMNS = [column for column in users.c if column.name != "password_hash"]
"""Every ``users`` column but the password hash."""


def prefixed_user_columns(table: Any, prefix: str) -> list[Any]:
    """The public user columns of ``table`` (an alias of ``users``), labelled ``prefix + name``."""
    return [column.label(prefix + column.name) for column in table.c if column.name != "password_hash"]


def user_from_prefixed(row: Any, prefix: str) -> User:
    """A :class:`User` from columns selected with :func:`prefixed_user_columns`."""
    return User(
        id=getattr(row, prefix + "id"),
        username=getattr(row, prefix + "username"),
        display_name=getattr(row, prefix + "display_name"),
        bio=getattr(row, prefix + "bio"),
        avatar=getattr(row, prefix + "avatar"),
        is_bot=getattr(row, prefix + "is_bot"),
        created_at=ms_to_datetime(getattr(row, prefix + "created_at")),
    )


def session_from_row(row: Any) -> DeviceSession:
    """A :class:`DeviceSession` from a ``devices`` row."""
    return DeviceSession(
        user_id=row.user_id,
        device_id=row.device_id,
        session_id=row.session_id,
        refresh_expires_at=row.refresh_expires_at,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
    )


class UserStore:
    """Named transactions on users and devices."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self, username: str, password_hash: str, display_name: str, *, now: int, is_bot: bool = False
    ) -> User:
        """Insert a user; raises :class:`UsernameTaken`."""
        try:
            return await self._db.write(_create_user, username, password_hash, display_name, now, is_bot)
        except IntegrityError as exc:
            raise UsernameTaken(username) from exc

    async def credentials(self, username: str) -> Credentials | None:
        """The user and password hash for a username."""
        return await self._db.read(_credentials, username)

    async def get(self, user_id: int) -> User | None:
        """One user by id."""
        return await self._db.read(_user_where, users.c.id == user_id)

    async def get_by_username(self, username: str) -> User | None:
        """One user by username."""
        return await self._db.read(_user_where, users.c.username == username)

    async def get_many(self, user_ids: Iterable[int]) -> dict[int, User]:
        """Users by id; unknown ids are left out."""
        ids = list(set(user_ids))
        if not ids:
            return {}
        return await self._db.read(_users_by_id, ids)

    async def update_profile(
        self, user_id: int, *, display_name: str | None, bio: str | None, avatar: str | None
    ) -> User | None:
        """Change profile fields; ``None`` leaves a field as it is."""
        values = {
            key: value
            for key, value in (("display_name", display_name), ("bio", bio), ("avatar", avatar))
            if value is not None
        }
        return await self._db.write(_update_profile, user_id, values)

    async def rotate_refresh(
        self, refresh_hash: str, *, new_hash: str, new_expires_at: int, now: int
    ) -> DeviceSession | None:
        """Swap a valid refresh token for a new one; ``None`` if it is unknown or expired.

        The old token is remembered (``rotated_refresh``) until the new one expires, so that presenting
        it again can be told apart from presenting an unknown token (see ``DeviceStore.end_reused``).
        """
        return await self._db.write(_rotate_refresh, refresh_hash, new_hash, new_expires_at, now)


# Transactions -------------------------------------------------------------------------------------


def _create_user(
    conn: Connection, username: str, password_hash: str, display_name: str, now: int, is_bot: bool
) -> User:
    result = conn.execute(
        insert(users)
        .values(
            username=username,
            password_hash=password_hash,
            display_name=display_name,
            is_bot=is_bot,
            created_at=now,
        )
        .returning(*users.c)
    )
    return _user(result.one())


def _credentials(conn: Connection, username: str) -> Credentials | None:
    row = conn.execute(select(users).where(users.c.username == username)).one_or_none()
    return None if row is None else Credentials(_user(row), row.password_hash)


def _user_where(conn: Connection, condition: Any) -> User | None:
    row = conn.execute(select(users).where(condition)).one_or_none()
    return None if row is None else _user(row)


def _update_profile(conn: Connection, user_id: int, values: dict[str, Any]) -> User | None:
    if values:
        conn.execute(update(users).where(users.c.id == user_id).values(**values))
    return _user_where(conn, users.c.id == user_id)


def _users_by_id(conn: Connection, ids: list[int]) -> dict[int, User]:
    rows = conn.execute(select(users).where(users.c.id.in_(ids))).all()
    return {row.id: _user(row) for row in rows}


def _rotate_refresh(
    conn: Connection, refresh_hash: str, new_hash: str, new_expires_at: int, now: int
) -> DeviceSession | None:
    row = conn.execute(
        update(devices)
        .where(devices.c.refresh_hash == refresh_hash, devices.c.refresh_expires_at > now)
        .values(refresh_hash=new_hash, refresh_expires_at=new_expires_at, last_seen_at=now)
        .returning(*devices.c)
    ).one_or_none()
    if row is None:
        return None
    conn.execute(delete(rotated_refresh).where(rotated_refresh.c.expires_at <= now))
    conn.execute(
        insert(rotated_refresh).values(
            refresh_hash=refresh_hash,
            session_id=row.session_id,
            user_id=row.user_id,
            device_id=row.device_id,
            expires_at=new_expires_at,
        )
    )
    return session_from_row(row)
