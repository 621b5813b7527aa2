"""Cluster administration: the admin flag, disabled accounts and bot tokens (migration ``0007_admin``).

Only the hash (SHA-256) of a bot token is stored. A user disabled here cannot log in
(:meth:`AdminStore.login_state`); ending the sessions it already has is the caller's part, through the
device service, so that every node refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from im_schema.admin import AdminUser

from ._util import ms_to_datetime
from .engine import Database
from .tables import bot_tokens, members, messages, users
from .users import UsernameTaken, user_from_row

__all__ = ["AdminStore", "LoginState", "StoredMessage"]


@dataclass(frozen=True, slots=True)
class LoginState:
    """What the entrance needs to know about an account beyond its password."""

    is_admin: bool
    disabled: bool


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What storage knows of one message for a trace: its row, and who has read it."""

    sender: int
    client_msg_id: str | None
    created_at: int
    """Milliseconds since the epoch."""
    read: list[int]
    """Members (not the sender) whose read position covers it, in id order, at most ``limit``."""
    unread: list[int]
    read_count: int
    unread_count: int


def _admin_user(row: Any) -> AdminUser:
    return AdminUser(
        **user_from_row(row).model_dump(),
        is_admin=bool(row.is_admin),
        disabled_at=None if row.disabled_at is None else ms_to_datetime(row.disabled_at),
    )


def _where(user: int | str) -> Any:
    return users.c.id == user if isinstance(user, int) else users.c.username == user


class AdminStore:
    """Named transactions of cluster administration."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user: int | str) -> AdminUser | None:
        """One user by id or username, with the admin columns."""
        return await self._db.read(_get, _where(user))

    async def page(self, *, after: int, limit: int) -> list[AdminUser]:
        """Users with an id above ``after``, in id order."""
        return await self._db.read(_page, after, limit)

    async def count_users(self) -> int:
        """How many accounts exist."""
        return await self._db.read(_count)

    async def login_state(self, user_id: int) -> LoginState | None:
        """Whether the user is an admin or disabled; ``None`` if there is no such user."""
        return await self._db.read(_login_state, user_id)

    async def set_admin(self, user: int | str, is_admin: bool = True) -> AdminUser | None:
        """Grant (or take) the admin role."""
        return await self._db.write(_set, _where(user), {"is_admin": is_admin})

    async def set_disabled(self, user: int | str, disabled_at: int | None) -> AdminUser | None:
        """Disable the account at ``disabled_at`` (ms), or enable it again (``None``)."""
        return await self._db.write(_set, _where(user), {"disabled_at": disabled_at})

    async def create_bot(
        self, username: str, password_hash: str, display_name: str, token_hash: str, *, now: int
    ) -> AdminUser:
        """A bot account and its first token; raises :class:`UsernameTaken`."""
        try:
            return await self._db.write(_create_bot, username, password_hash, display_name, token_hash, now)
        except IntegrityError as exc:
            raise UsernameTaken(username) from exc

    async def bots(self) -> list[AdminUser]:
        """Every bot account, in id order."""
        return await self._db.read(_bots)

    async def bot_by_token(self, token_hash: str) -> AdminUser | None:
        """The bot a token belongs to."""
        return await self._db.read(_bot_by_token, token_hash)

    async def stored_message(self, conversation: str, seq: int, limit: int) -> StoredMessage | None:
        """A message and its readers (``limit`` of each list), or ``None`` if there is no such message."""
        return await self._db.read(_stored_message, conversation, seq, limit)

    async def revoke_tokens(self, user_id: int) -> int:
        """Delete every token of a bot; how many there were."""
        return await self._db.write(_revoke_tokens, user_id)


# Transactions -------------------------------------------------------------------------------------


def _get(conn: Connection, condition: Any) -> AdminUser | None:
    row = conn.execute(select(users).where(condition)).one_or_none()
    return None if row is None else _admin_user(row)


def _page(conn: Connection, after: int, limit: int) -> list[AdminUser]:
    rows = conn.execute(select(users).where(users.c.id > after).order_by(users.c.id).limit(limit)).all()
    return [_admin_user(row) for row in rows]


def _count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(users)).scalar_one())


def _login_state(conn: Connection, user_id: int) -> LoginState | None:
    row = conn.execute(select(users.c.is_admin, users.c.disabled_at).where(users.c.id == user_id)).one_or_none()
    return None if row is None else LoginState(bool(row.is_admin), row.disabled_at is not None)


def _set(conn: Connection, condition: Any, values: dict[str, Any]) -> AdminUser | None:
    conn.execute(update(users).where(condition).values(**values))
    return _get(conn, condition)


def _create_bot(
    conn: Connection, username: str, password_hash: str, display_name: str, token_hash: str, now: int
) -> AdminUser:
    row = conn.execute(
        insert(users)
        .values(username=username, password_hash=password_hash, display_name=display_name, is_bot=True, created_at=now)
        .returning(*users.c)
    ).one()
    conn.execute(insert(bot_tokens).values(token_hash=token_hash, user_id=row.id, created_at=now))
    return _admin_user(row)


def _bots(conn: Connection) -> list[AdminUser]:
    rows = conn.execute(select(users).where(users.c.is_bot.is_(True)).order_by(users.c.id)).all()
    return [_admin_user(row) for row in rows]


def _bot_by_token(conn: Connection, token_hash: str) -> AdminUser | None:
    row = conn.execute(
        select(users).join(bot_tokens, bot_tokens.c.user_id == users.c.id).where(bot_tokens.c.token_hash == token_hash)
    ).one_or_none()
    return None if row is None else _admin_user(row)


def _revoke_tokens(conn: Connection, user_id: int) -> int:
    return int(conn.execute(delete(bot_tokens).where(bot_tokens.c.user_id == user_id)).rowcount or 0)


def _stored_message(conn: Connection, conversation: str, seq: int, limit: int) -> StoredMessage | None:
    row = conn.execute(
        select(messages.c.sender_id, messages.c.client_msg_id, messages.c.created_at).where(
            messages.c.conversation_id == conversation, messages.c.seq == seq
        )
    ).one_or_none()
    if row is None:
        return None
    could_see = (
        (members.c.conversation_id == conversation)
        & (members.c.joined_seq < seq)
        & (members.c.left_seq.is_(None) | (members.c.left_seq >= seq))
        & (members.c.user_id != row.sender_id)
    )
    lists = {}
    counts = {}
    for name, condition in (("read", members.c.read_seq >= seq), ("unread", members.c.read_seq < seq)):
        where = could_see & condition
        lists[name] = list(
            conn.execute(select(members.c.user_id).where(where).order_by(members.c.user_id).limit(limit)).scalars()
        )
        counts[name] = int(conn.execute(select(func.count()).select_from(members).where(where)).scalar_one())
    return StoredMessage(
        sender=int(row.sender_id),
        client_msg_id=row.client_msg_id,
        created_at=int(row.created_at),
        read=lists["read"],
        unread=lists["unread"],
        read_count=counts["read"],
        unread_count=counts["unread"],
    )
