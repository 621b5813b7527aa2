"""Login failures per username, shared by every API node (the state behind login throttling)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, delete, select, update

from ._util import insert_ignore
from .engine import Database
from .tables import login_failures
from .users import Credentials, _credentials

__all__ = ["LoginFailureStore"]


class LoginFailureStore:
    """Named transactions on ``login_failures``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def state(self, username: str, *, now: int) -> tuple[int, int]:
        """``(milliseconds until a login may be tried, failures in a row)`` for ``username``."""
        return await self._db.read(_state, username, now)

    async def attempt(self, username: str, *, now: int) -> tuple[int, int, Credentials | None]:
        """:meth:`state` and the account's credentials, read together (one read for a login)."""
        return await self._db.read(_attempt, username, now)

    async def failed(self, username: str, wait_ms: Callable[[int], int], *, now: int, ttl_ms: int) -> int:
        """Count a wrong password; returns the wait it earned (``wait_ms(failures in a row)``), in ms.

        Records idle for ``ttl_ms`` are forgotten first.
        """
        return await self._db.write(_failed, self._db.dialect, username, wait_ms, now, ttl_ms)

    async def succeeded(self, username: str) -> None:
        """Forget the failures of ``username`` (only written if there were any)."""
        await self._db.write(_succeeded, username)


def _state(conn: Connection, username: str, now: int) -> tuple[int, int]:
    row = conn.execute(select(login_failures).where(login_failures.c.username == username)).one_or_none()
    if row is None:
        return 0, 0
    return max(0, row.wait_until - now), row.failures


def _attempt(conn: Connection, username: str, now: int) -> tuple[int, int, Credentials | None]:
    wait_ms, failures = _state(conn, username, now)
    return wait_ms, failures, _credentials(conn, username)


def _failed(conn: Connection, dialect: str, username: str, wait_ms: Callable[[int], int], now: int, ttl_ms: int) -> int:
    # Idle records go here, so the table holds at most the usernames tried within the TTL.
    conn.execute(delete(login_failures).where(login_failures.c.last_failure_at <= now - ttl_ms))
    conn.execute(
        insert_ignore(dialect, login_failures).values(username=username, failures=0, last_failure_at=now, wait_until=0)
    )
    # Concurrent failures of one username on several nodes queue on its row (PostgreSQL).
    failures = conn.execute(
        select(login_failures.c.failures).where(login_failures.c.username == username).with_for_update()
    ).scalar_one()
    failures += 1
    wait = wait_ms(failures)
    conn.execute(
        update(login_failures)
        .where(login_failures.c.username == username)
        .values(failures=failures, last_failure_at=now, wait_until=now + wait)
    )
    return wait


def _succeeded(conn: Connection, username: str) -> None:
    conn.execute(delete(login_failures).where(login_failures.c.username == username))
