"""Accounts and device sessions: register, log in, refresh, log out, authenticate."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from im_schema.errors import ErrorCode
from im_schema.models import User
from im_schema.rest import Session

from ..errors import Conflict, Unauthorized
from ..settings import Settings
from ..storage import UsernameTaken, UserStore
from ..storage._util import now_ms
from .tokens import ExpiredToken, InvalidToken, TokenCodec

if TYPE_CHECKING:
    from .devices import DeviceService

__all__ = ["AuthService", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: one user on one device."""

    user_id: int
    device_id: str
    session_id: str


def _refresh_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _never(_: str) -> bool:
    return False


class AuthService:
    """Passwords (Argon2, hashed off the event loop) and tokens.

    ``revoked`` tells whether a session was logged out (the node's copy of the revocation bucket);
    ``devices`` starts and ends device sessions (the per-account limit, revocations).
    """

    def __init__(
        self,
        settings: Settings,
        users: UserStore,
        tokens: TokenCodec,
        *,
        devices: DeviceService,
        revoked: Callable[[str], bool] = _never,
    ) -> None:
        self._settings = settings
        self._users = users
        self._tokens = tokens
        self._devices = devices
        self._revoked = revoked
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
        )
        # Verified against when the username is unknown, so that timing does not tell which names exist.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(8))

    async def register(self, username: str, password: str, display_name: str | None) -> User:
        """Create an account; raises ``username_taken``."""
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        try:
            return await self._users.create_user(username, password_hash, display_name or username, now=now_ms())
        except UsernameTaken:
            raise Conflict(f"the username {username!r} is taken", code=ErrorCode.USERNAME_TAKEN) from None

    async def login(self, username: str, password: str, device_id: str) -> Session:
        """Check the password and start a fresh session for the device."""
        credentials = await self._users.credentials(username)
        stored_hash = credentials.password_hash if credentials else self._dummy_hash
        if not await asyncio.to_thread(self._verify, stored_hash, password) or credentials is None:
            raise Unauthorized("wrong username or password", code=ErrorCode.INVALID_CREDENTIALS)
        return await self._start(credentials.user, device_id)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _start(self, user: User, device_id: str) -> Session:
        refresh = secrets.token_urlsafe(32)
        session = await self._devices.start(
            user.id,
            device_id,
            session_id=secrets.token_hex(12),
            refresh_hash=_refresh_hash(refresh),
            refresh_expires_at=now_ms() + self._settings.refresh_token_ttl * 1000,
        )
        return self._session(user, session.device_id, session.session_id, refresh)

    def _session(self, user: User, device_id: str, session_id: str, refresh: str) -> Session:
        ttl = self._settings.access_token_ttl
        access = self._tokens.issue(user.id, device_id, session_id, now=int(time.time()), ttl=ttl)
        return Session(access_token=access, refresh_token=refresh, expires_in=ttl, user=user, device_id=device_id)

    async def refresh(self, refresh_token: str) -> Session:
        """Rotate a refresh token into a new token pair."""
        new_refresh = secrets.token_urlsafe(32)
        now = now_ms()
        session = await self._users.rotate_refresh(
            _refresh_hash(refresh_token),
            new_hash=_refresh_hash(new_refresh),
            new_expires_at=now + self._settings.refresh_token_ttl * 1000,
            now=now,
        )
        if session is None:
            raise Unauthorized("the refresh token is unknown, used or expired")
        user = await self._users.get(session.user_id)
        if user is None:
            raise Unauthorized("the account no longer exists")
        return self._session(user, session.device_id, session.session_id, new_refresh)

    async def logout(self, principal: Principal) -> None:
        """End the caller's device session: its tokens stop working on every node."""
        await self._devices.end_current(principal)

    def authenticate(self, token: str) -> Principal:
        """The principal of an access token; raises ``unauthorized`` or ``token_expired``."""
        try:
            claims = self._tokens.verify(token, now=time.time())
        except ExpiredToken:
            raise Unauthorized("the access token expired", code=ErrorCode.TOKEN_EXPIRED) from None
        except InvalidToken:
            raise Unauthorized("the access token is not valid") from None
        if self._revoked(claims.session_id):
            raise Unauthorized("this device was logged out; log in again")
        return Principal(claims.user_id, claims.device_id, claims.session_id)
