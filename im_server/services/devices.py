"""A user's devices: the per-account limit, the device list, and logging devices out.

Every session that ends here (a logout, or a new login of a device that replaces its session) is
revoked through :attr:`DeviceService.revoke`, which the node points at the cluster's revocation bucket
(:mod:`im_server.cluster.sessions`); it returns once every node refuses the session's tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from im_schema.devices import DeviceList, LoggedOut
from im_schema.errors import ErrorCode
from im_schema.models import Device, format_timestamp

from ..bus.revocations import REVOCATION_MARGIN
from ..bus.routes import NodeTable, RouteTable
from ..errors import Conflict, NotFound, Unavailable
from ..settings import Settings
from ..storage import DeviceSession
from ..storage._util import ms_to_datetime, now_ms
from ..storage.devices import DeviceStore, Revoked, SessionStart, TooManyDevices
from .auth import Principal
from .batching import Batcher

__all__ = ["DeviceService", "Revoke"]

log = logging.getLogger(__name__)

Revoke = Callable[[Sequence[Revoked]], Awaitable[None]]

LOGIN_BATCH = 256
"""The most logins stored in one transaction."""


class DeviceService:
    """Device sessions: start them within the limit, list them, end them everywhere at once."""

    def __init__(
        self,
        settings: Settings,
        store: DeviceStore,
        routes: RouteTable,
        nodes: NodeTable,
        *,
        revoke: Revoke | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._routes = routes
        self._nodes = nodes
        self.revoke = revoke
        """Makes every node refuse the sessions' tokens (``None``: this process alone, as in unit tests)."""
        self._starts: Batcher[SessionStart, tuple[DeviceSession, Revoked | None]] = Batcher(
            self._start_batch, max_size=LOGIN_BATCH
        )
        """Logins that arrive together are stored with one commit (see :meth:`start`)."""

    def _revoke_until(self, now: int) -> int:
        return now + (self._settings.access_token_ttl + REVOCATION_MARGIN) * 1000

    async def _publish(self, revoked: Sequence[Revoked]) -> None:
        if not revoked or self.revoke is None:
            return
        try:
            await self.revoke(revoked)
        except Exception as exc:
            # Stored already: retrying publishes again, and a restarting API node restores the bucket.
            log.warning("cannot publish %d revocations: %r", len(revoked), exc)
            raise Unavailable("logged out, but not every node may know yet; retry", retry_after=1.0) from None

    async def start(
        self, user_id: int, device_id: str, *, session_id: str, refresh_hash: str, refresh_expires_at: int
    ) -> DeviceSession:
        """Log a device in; a new device beyond ``IM_MAX_DEVICES`` is refused with ``too_many_devices``.

        Logins that arrive while others are being stored are stored together, in one transaction (a
        savepoint each, so that one refused login does not undo the others), and the sessions they
        replace are revoked together (one revocation barrier).
        """
        start = SessionStart(user_id, device_id, session_id, refresh_hash, refresh_expires_at)
        try:
            session, _ = await self._starts.submit(start)
        except TooManyDevices as exc:
            names = ", ".join(item.device_id for item in exc.sessions)
            raise Conflict(
                f"this account is logged in on {len(exc.sessions)} devices, the most this server allows"
                f" ({names}); log one of them out first",
                code=ErrorCode.TOO_MANY_DEVICES,
                details=[
                    {"device_id": item.device_id, "last_seen_at": format_timestamp(ms_to_datetime(item.last_seen_at))}
                    for item in exc.sessions
                ],
            ) from None
        return session

    async def _start_batch(self, starts: list[SessionStart]) -> list[tuple[DeviceSession, Revoked | None] | Exception]:
        now = now_ms()
        outcomes = await self._store.start_sessions(
            starts, now=now, max_devices=self._settings.max_devices, revoke_until=self._revoke_until(now)
        )
        replaced = [outcome[1] for outcome in outcomes if isinstance(outcome, tuple) and outcome[1] is not None]
        try:
            await self._publish(replaced)
        except Unavailable as exc:
            # Stored, but not every node may refuse the replaced sessions yet: the logins that replaced
            # one fail as a lone login would (retrying is safe); the others stand.
            return [exc if isinstance(outcome, tuple) and outcome[1] is not None else outcome for outcome in outcomes]
        return outcomes

    async def end_current(self, principal: Principal) -> None:
        """Log out the caller's own device (the session of the token, even if it was replaced)."""
        now = now_ms()
        revoked = await self._store.end_session(
            principal.user_id,
            principal.device_id,
            principal.session_id,
            now=now,
            revoke_until=self._revoke_until(now),
        )
        await self._publish([revoked])

    async def end_reused(self, refresh_hash: str) -> bool:
        """End the session of a refresh token presented again after it was rotated (it leaked, or the
        client misbehaves): every token of the family stops working and live connections are closed.
        ``False`` if the token was never rotated."""
        now = now_ms()
        revoked = await self._store.end_reused(refresh_hash, now=now, revoke_until=self._revoke_until(now))
        if revoked is None:
            return False
        log.warning(
            "refresh token reused: ended session %s of user %d device %r",
            revoked.session_id,
            revoked.user_id,
            revoked.device_id,
        )
        await self._publish([revoked])
        return True

    async def list(self, principal: Principal) -> DeviceList:
        """The caller's devices, with whether each holds a connection to a live gateway now."""
        sessions = await self._store.sessions(principal.user_id, now=now_ms())
        routes = self._routes.devices(principal.user_id)
        devices = [
            Device(
                device_id=session.device_id,
                created_at=ms_to_datetime(session.created_at),
                last_seen_at=ms_to_datetime(session.last_seen_at),
                connected=session.device_id in routes and self._nodes.is_live(routes[session.device_id]),
                current=session.device_id == principal.device_id,
            )
            for session in sessions
        ]
        return DeviceList(devices=devices)

    async def end_user(self, user_id: int, device_id: str | None = None) -> Sequence[str]:
        """End one device session of a user, or all of them (``None``), as a logout does: tokens refused
        on every node, connections closed (4012). For admins (kick, disable, bot revocation); returns the
        devices ended."""
        now = now_ms()
        revoked = await self._store.end_devices(user_id, device_id, now=now, revoke_until=self._revoke_until(now))
        await self._publish(revoked)
        return sorted({item.device_id for item in revoked})

    async def logout(self, principal: Principal, device_id: str | None) -> LoggedOut:
        """Log out one of the caller's devices, or all of them (``None``), the caller's included."""
        now = now_ms()
        revoked = await self._store.end_devices(
            principal.user_id, device_id, now=now, revoke_until=self._revoke_until(now)
        )
        if device_id is not None and not revoked:
            raise NotFound(f"you have no device {device_id!r} logged in", code=ErrorCode.DEVICE_NOT_FOUND)
        await self._publish(revoked)
        devices = sorted({item.device_id for item in revoked})
        current = any(item.session_id == principal.session_id for item in revoked)
        return LoggedOut(devices=devices, current=current)
