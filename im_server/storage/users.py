"""Users and their device sessions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from im_schema.models import User

from ._util import ms_to_datetime
from .engine import Database
from .tables import devices, users

__all__ = ["Credentials", "DeviceSession", "UserStore", "UsernameTaken"]


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


def _user(row: Any) -> User:
    return User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        is_bot=row.is_bot,
        created_at=ms_to_datetime(row.created_at),
    )


def _session(row: Any) -> DeviceSession:
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
            async with self._db.write() as conn:
                result = await conn.execute(
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
        except IntegrityError as exc:
            raise UsernameTaken(username) from exc

    async def credentials(self, username: str) -> Credentials | None:
        """The user and password hash for a username."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).one_or_none()
        return None if row is None else Credentials(_user(row), row.password_hash)

    async def get(self, user_id: int) -> User | None:
        """One user by id."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).one_or_none()
        return None if row is None else _user(row)

    async def get_by_username(self, username: str) -> User | None:
        """One user by username."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).one_or_none()
        return None if row is None else _user(row)

    async def get_many(self, user_ids: Iterable[int]) -> dict[int, User]:
        """Users by id; unknown ids are left out."""
        ids = list(set(user_ids))
        if not ids:
            return {}
        async with self._db.read() as conn:
            rows = (await conn.execute(select(users).where(users.c.id.in_(ids)))).all()
        return {row.id: _user(row) for row in rows}

    async def start_session(
        self,
        user_id: int,
        device_id: str,
        *,
        session_id: str,
        refresh_hash: str,
        refresh_expires_at: int,
        now: int,
    ) -> DeviceSession:
        """Create or replace the session of one device."""
        async with self._db.write() as conn:
            await conn.execute(delete(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id))
            result = await conn.execute(
                insert(devices)
                .values(
                    user_id=user_id,
                    device_id=device_id,
                    session_id=session_id,
                    refresh_hash=refresh_hash,
                    refresh_expires_at=refresh_expires_at,
                    created_at=now,
                    last_seen_at=now,
                )
                .returning(*devices.c)
            )
            return _session(result.one())

    async def rotate_refresh(
        self, refresh_hash: str, *, new_hash: str, new_expires_at: int, now: int
    ) -> DeviceSession | None:
        """Swap a valid refresh token for a new one; ``None`` if it is unknown or expired."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(devices)
                .where(devices.c.refresh_hash == refresh_hash, devices.c.refresh_expires_at > now)
                .values(refresh_hash=new_hash, refresh_expires_at=new_expires_at, last_seen_at=now)
                .returning(*devices.c)
            )
            row = result.one_or_none()
        return None if row is None else _session(row)

    async def end_session(self, user_id: int, device_id: str, session_id: str) -> bool:
        """Delete a device's session if it is still the given one."""
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(devices).where(
                    devices.c.user_id == user_id,
                    devices.c.device_id == device_id,
                    devices.c.session_id == session_id,
                )
            )
        return bool(result.rowcount)
