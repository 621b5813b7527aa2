"""Device sessions with a per-account limit, and the sessions revoked by logouts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from ._util import insert_ignore
from .engine import Database
from .tables import devices, revoked_sessions, rotated_refresh, users
from .users import DeviceSession, session_from_row

__all__ = ["DeviceStore", "Revoked", "SessionStart", "TooManyDevices"]


@dataclass(frozen=True, slots=True)
class Revoked:
    """A device session that ended while access tokens issued for it may still be valid."""

    session_id: str
    user_id: int
    device_id: str
    expires_at: int
    """Milliseconds since the epoch; no access token of the session is valid after this."""


@dataclass(frozen=True, slots=True)
class SessionStart:
    """One login of a device, as :meth:`DeviceStore.start_sessions` takes it."""

    user_id: int
    device_id: str
    session_id: str
    refresh_hash: str
    refresh_expires_at: int


class TooManyDevices(Exception):
    """The account is logged in on ``len(devices)`` devices already, the limit."""

    def __init__(self, sessions: list[DeviceSession]) -> None:
        super().__init__(f"{len(sessions)} devices")
        self.sessions = sessions


class DeviceStore:
    """Named transactions on device sessions and revocations."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def start_session(
        self,
        user_id: int,
        device_id: str,
        *,
        session_id: str,
        refresh_hash: str,
        refresh_expires_at: int,
        now: int,
        max_devices: int,
        revoke_until: int,
    ) -> tuple[DeviceSession, Revoked | None]:
        """Log a device in, replacing its earlier session (returned as revoked, if any).

        Sessions whose refresh token expired no longer count and are removed. Raises
        :class:`TooManyDevices` if the device is new and the account has ``max_devices`` already.
        """
        return await self._db.write(
            _start_session,
            user_id,
            device_id,
            session_id,
            refresh_hash,
            refresh_expires_at,
            now,
            max_devices,
            revoke_until,
        )

    async def start_sessions(
        self, starts: list[SessionStart], *, now: int, max_devices: int, revoke_until: int
    ) -> list[tuple[DeviceSession, Revoked | None] | Exception]:
        """Log several devices in with one transaction (one commit for a burst of logins).

        Each login runs in a savepoint of its own and gets its own outcome, in order: what
        :meth:`start_session` returns, or the exception it would raise (:class:`TooManyDevices`).
        """
        return await self._db.write(_start_sessions, starts, now, max_devices, revoke_until)

    async def sessions(self, user_id: int, *, now: int) -> list[DeviceSession]:
        """The user's live sessions (refresh token not expired), oldest login first."""
        return await self._db.read(_sessions, user_id, now)

    async def end_session(
        self, user_id: int, device_id: str, session_id: str, *, now: int, revoke_until: int
    ) -> Revoked:
        """End one session (a logout with its own token): the device row goes only if it still holds
        this session, and the session is revoked either way (so that retrying is harmless)."""
        return await self._db.write(_end_session, user_id, device_id, session_id, now, revoke_until)

    async def end_devices(self, user_id: int, device_id: str | None, *, now: int, revoke_until: int) -> list[Revoked]:
        """End the session of one device (``device_id``) or of all of them (``None``)."""
        return await self._db.write(_end_devices, user_id, device_id, now, revoke_until)

    async def end_reused(self, refresh_hash: str, *, now: int, revoke_until: int) -> Revoked | None:
        """A refresh token that was already swapped came back: end its session (the whole token family)
        and return the revocation; ``None`` if the token was never rotated here (or long expired)."""
        return await self._db.write(_end_reused, refresh_hash, now, revoke_until)

    async def revocations(self, *, now: int) -> list[Revoked]:
        """Every revocation still in force."""
        return await self._db.read(_revocations, now)


# Transactions -------------------------------------------------------------------------------------


def _revoke(conn: Connection, revoked: list[Revoked], now: int, *, prune: bool = True) -> None:
    # Old revocations go in the same transaction: the index on expires_at makes it cheap.
    if prune:
        conn.execute(delete(revoked_sessions).where(revoked_sessions.c.expires_at <= now))
    if revoked:
        conn.execute(
            insert_ignore(conn.dialect.name, revoked_sessions),
            [
                {
                    "session_id": item.session_id,
                    "user_id": item.user_id,
                    "device_id": item.device_id,
                    "expires_at": item.expires_at,
                }
                for item in revoked
            ],
        )


def _start_session(
    conn: Connection,
    user_id: int,
    device_id: str,
    session_id: str,
    refresh_hash: str,
    refresh_expires_at: int,
    now: int,
    max_devices: int,
    revoke_until: int,
    prune: bool = True,
) -> tuple[DeviceSession, Revoked | None]:
    # Concurrent logins of one account queue on its row (PostgreSQL; SQLite has one writer anyway),
    # so that two new devices cannot both take the last place.
    conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update()).one_or_none()
    conn.execute(delete(devices).where(devices.c.user_id == user_id, devices.c.refresh_expires_at <= now))
    rows = conn.execute(
        select(devices).where(devices.c.user_id == user_id).order_by(devices.c.created_at, devices.c.device_id)
    ).all()
    previous = next((row for row in rows if row.device_id == device_id), None)
    if previous is None and len(rows) >= max_devices:
        raise TooManyDevices([session_from_row(row) for row in rows])
    revoked = None
    if previous is not None:
        conn.execute(delete(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id))
        revoked = Revoked(previous.session_id, user_id, device_id, revoke_until)
    _revoke(conn, [revoked] if revoked else [], now, prune=prune)
    row = conn.execute(
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
    ).one()
    return session_from_row(row), revoked


def _start_sessions(
    conn: Connection, starts: list[SessionStart], now: int, max_devices: int, revoke_until: int
) -> list[tuple[DeviceSession, Revoked | None] | Exception]:
    # Old revocations go once for the whole batch (``_start_session`` would repeat it per login).
    _revoke(conn, [], now)
    outcomes: dict[int, tuple[DeviceSession, Revoked | None] | Exception] = {}
    # In user order: on PostgreSQL two nodes' batches then lock the users' rows in the same order.
    for index in sorted(range(len(starts)), key=lambda i: starts[i].user_id):
        start = starts[index]
        try:
            with conn.begin_nested():
                outcomes[index] = _start_session(
                    conn,
                    start.user_id,
                    start.device_id,
                    start.session_id,
                    start.refresh_hash,
                    start.refresh_expires_at,
                    now,
                    max_devices,
                    revoke_until,
                    prune=False,
                )
        except Exception as exc:
            outcomes[index] = exc
    return [outcomes[index] for index in range(len(starts))]


def _sessions(conn: Connection, user_id: int, now: int) -> list[DeviceSession]:
    rows = conn.execute(
        select(devices)
        .where(devices.c.user_id == user_id, devices.c.refresh_expires_at > now)
        .order_by(devices.c.created_at, devices.c.device_id)
    ).all()
    return [session_from_row(row) for row in rows]


def _end_session(
    conn: Connection, user_id: int, device_id: str, session_id: str, now: int, revoke_until: int
) -> Revoked:
    conn.execute(
        delete(devices).where(
            devices.c.user_id == user_id,
            devices.c.device_id == device_id,
            devices.c.session_id == session_id,
        )
    )
    revoked = Revoked(session_id, user_id, device_id, revoke_until)
    _revoke(conn, [revoked], now)
    return revoked


def _end_devices(conn: Connection, user_id: int, device_id: str | None, now: int, revoke_until: int) -> list[Revoked]:
    condition = devices.c.user_id == user_id
    if device_id is not None:
        condition = condition & (devices.c.device_id == device_id)
    rows = conn.execute(delete(devices).where(condition).returning(devices.c.device_id, devices.c.session_id)).all()
    revoked = [Revoked(row.session_id, user_id, row.device_id, revoke_until) for row in rows]
    revoked.sort(key=lambda item: item.device_id)
    _revoke(conn, revoked, now)
    return revoked


def _revocations(conn: Connection, now: int) -> list[Revoked]:
    rows = conn.execute(select(revoked_sessions).where(revoked_sessions.c.expires_at > now)).all()
    return [Revoked(row.session_id, row.user_id, row.device_id, row.expires_at) for row in rows]


def _end_reused(conn: Connection, refresh_hash: str, now: int, revoke_until: int) -> Revoked | None:
    row = conn.execute(
        select(rotated_refresh).where(
            rotated_refresh.c.refresh_hash == refresh_hash, rotated_refresh.c.expires_at > now
        )
    ).one_or_none()
    if row is None:
        return None
    # Every token of the family shares the session id: ending the session ends them all.
    return _end_session(conn, row.user_id, row.device_id, row.session_id, now, revoke_until)
