"""Accounts and device sessions: register, log in, refresh, log out, authenticate.

The entrance is throttled here. A wrong password counts against the username (in the database, so
every API node sees it, and the same whether the name exists or not) and against the client address
(per node); past the free failures each further one doubles the wait, and an attempt during a wait is
refused with ``rate_limited`` before any password is checked. Registrations are a token bucket per
address. Argon2 runs in a pool of its own, ``IM_ARGON2_CONCURRENCY`` at a time with at most
``IM_ARGON2_QUEUE`` waiting; beyond that the answer is ``unavailable`` with Retry-After. A good password
is hashed once per node and ``IM_PASSWORD_CACHE_TTL``: logging in again with it costs one keyed BLAKE2b
(:class:`VerifiedPasswords`), while a wrong one always costs Argon2. A refresh token
presented again after it was rotated ends its session (every token of the family).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from im_schema.errors import ErrorCode
from im_schema.models import User
from im_schema.rest import Session

from ..errors import Conflict, Forbidden, RateLimited, Unauthorized, Unavailable
from ..settings import Settings
from ..storage import UsernameTaken, UserStore
from ..storage._util import now_ms
from ..storage.admin import AdminStore
from ..storage.entrance import LoginFailureStore
from .ratelimit import Backoff, BusyError, FailureTracker, RateLimiter, WorkLimiter
from .tokens import ExpiredToken, InvalidToken, TokenCodec

if TYPE_CHECKING:
    from .devices import DeviceService

__all__ = ["AuthService", "Principal", "VerifiedPasswords", "bot_token_hash"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: one user on one device."""

    user_id: int
    device_id: str
    session_id: str


def _refresh_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bot_token_hash(token: str) -> str:
    """What is stored of a bot token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _never(_: str) -> bool:
    return False


T = TypeVar("T")


class VerifiedPasswords:
    """The passwords this node checked with Argon2 lately: a login that repeats one costs a keyed BLAKE2b.

    Each entry is ``(digest of the password under a random key of this process, the stored hash it was
    checked against, when)``. A changed password (another stored hash) or an entry older than ``ttl``
    does not match, and neither does a wrong password: wrong passwords always run Argon2, so a miss
    takes as long as before and guessing gains nothing. The key is made at start and never written
    anywhere; someone who could read it from the process's memory could read passwords as they arrive.
    """

    def __init__(self, size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, tuple[bytes, str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, username: str, password: str) -> bytes:
        data = username.encode() + b"\0" + password.encode()
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()

    def matches(self, username: str, stored_hash: str, password: str) -> bool:
        """Whether ``password`` is the one last verified against ``stored_hash`` (within the TTL)."""
        entry = self._entries.get(username)
        if entry is None:
            return False
        digest, checked_hash, at = entry
        if checked_hash != stored_hash or self._clock() - at > self._ttl:
            del self._entries[username]
            return False
        return hmac.compare_digest(digest, self._digest(username, password))

    def remember(self, username: str, stored_hash: str, password: str) -> None:
        """Note a password Argon2 just accepted."""
        if self._size <= 0:
            return
        self._entries[username] = (self._digest(username, password), stored_hash, self._clock())
        self._entries.move_to_end(username)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


HASHING_NICENESS = 10
"""How much lower than the node's own CPU priority password hashing runs (a nice value)."""


def _lower_priority() -> None:
    # Linux schedules threads on their own (a thread's nice value is its own, and the threads Argon2
    # starts for its lanes inherit it); elsewhere this may fail or apply to the process: then skip it.
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


def _seconds(wait: float) -> float:
    # Whole seconds, never 0: what Retry-After can say.
    return float(max(1, math.ceil(wait)))


class AuthService:
    """Passwords (Argon2, in a bounded pool off the event loop), login throttling, and tokens.

    ``revoked`` tells whether a session was logged out (the node's copy of the revocation bucket);
    ``devices`` starts and ends device sessions (the per-account limit, revocations); ``failures`` holds
    each username's failed logins for the whole cluster.
    """

    def __init__(
        self,
        settings: Settings,
        users: UserStore,
        tokens: TokenCodec,
        *,
        devices: DeviceService,
        failures: LoginFailureStore,
        revoked: Callable[[str], bool] = _never,
        admin: AdminStore | None = None,
    ) -> None:
        self._settings = settings
        self._users = users
        self._tokens = tokens
        self._devices = devices
        self._failures = failures
        self._revoked = revoked
        self._admin = admin
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
        )
        # A pool of its own: hashing never takes the threads that storage and file probing use, and its
        # threads run at a lower CPU priority, so that a flood of logins cannot starve the event loop.
        self._pool = ThreadPoolExecutor(
            max_workers=settings.argon2_concurrency, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self.hashing = WorkLimiter(settings.argon2_concurrency, settings.argon2_queue)
        """Password hashes running and waiting (for metrics)."""
        self._account_backoff = Backoff(
            settings.login_free_failures, settings.login_backoff, settings.login_backoff_max
        )
        self._addresses: FailureTracker[str] = FailureTracker(
            Backoff(settings.login_address_free_failures, settings.login_backoff, settings.login_backoff_max),
            ttl=settings.login_failure_ttl,
        )
        self._registrations: RateLimiter[str] = RateLimiter(settings.register_rate, settings.register_burst)
        self._logins: dict[str, tuple[asyncio.Lock, int]] = {}
        self.verified = VerifiedPasswords(settings.password_cache_size, settings.password_cache_ttl)
        """Passwords checked lately: a repeated good login skips Argon2."""
        self.password_checks = {"argon2": 0, "remembered": 0}
        """Good and bad password checks that ran Argon2, and good ones answered from :attr:`verified`."""
        # Verified against when the username is unknown, so that timing does not tell which names exist.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(8))

    def close(self) -> None:
        """Stop the hashing pool (after the node stopped taking requests)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _refuse_if_busy(self) -> None:
        # Checked first as well, so that a flood past the queue is turned away before any database work.
        if self.hashing.full:
            raise Unavailable("the server is busy checking passwords; retry shortly", retry_after=1.0)

    async def _hash_work(self, fn: Callable[..., T], *args: object) -> T:
        try:
            async with self.hashing.slot():
                return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except BusyError:
            raise Unavailable("the server is busy checking passwords; retry shortly", retry_after=1.0) from None

    async def register(self, username: str, password: str, display_name: str | None, *, address: str = "") -> User:
        """Create an account; raises ``username_taken``, or ``rate_limited`` for too many from ``address``."""
        wait = self._registrations.acquire(address)
        if wait:
            raise RateLimited("too many registrations from your address; try again later", retry_after=_seconds(wait))
        self._refuse_if_busy()
        password_hash = await self._hash_work(self._hasher.hash, password)
        try:
            return await self._users.create_user(username, password_hash, display_name or username, now=now_ms())
        except UsernameTaken:
            raise Conflict(f"the username {username!r} is taken", code=ErrorCode.USERNAME_TAKEN) from None

    @contextlib.asynccontextmanager
    async def _one_login(self, username: str) -> AsyncIterator[None]:
        # Attempts on one username run one after another on a node, so that parallel guesses cannot all
        # slip past the wait before the first failure is counted.
        lock, users = self._logins.get(username) or (asyncio.Lock(), 0)
        self._logins[username] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._logins[username]
            if users == 1:
                del self._logins[username]
            else:
                self._logins[username] = (lock, users - 1)

    async def login(self, username: str, password: str, device_id: str, *, address: str = "") -> Session:
        """Check the password and start a fresh session for the device.

        Raises ``invalid_credentials``, or ``rate_limited`` (with Retry-After) while the username or the
        client ``address`` must wait after failures.
        """
        wait = self._addresses.wait(address)
        if wait:
            raise RateLimited("too many failed logins from your address; wait", retry_after=_seconds(wait))
        self._refuse_if_busy()
        async with self._one_login(username):
            # One read: the account's failures and its password hash (the hash goes unused while it waits).
            wait_ms, failures, credentials = await self._failures.attempt(username, now=now_ms())
            if wait_ms:
                raise RateLimited("too many failed logins for this account; wait", retry_after=_seconds(wait_ms / 1000))
            stored_hash = credentials.password_hash if credentials else self._dummy_hash
            if credentials is not None and self.verified.matches(username, stored_hash, password):
                good = True  # this node ran Argon2 on this very password lately: a reconnecting client
                self.password_checks["remembered"] += 1
            else:
                good = await self._hash_work(self._verify, stored_hash, password)
                self.password_checks["argon2"] += 1
                if good and credentials is not None:
                    self.verified.remember(username, stored_hash, password)
            if not good or credentials is None:
                await self._failures.failed(
                    username,
                    self._account_backoff.wait_ms,
                    now=now_ms(),
                    ttl_ms=int(self._settings.login_failure_ttl * 1000),
                )
                self._addresses.failed(address)
                raise Unauthorized("wrong username or password", code=ErrorCode.INVALID_CREDENTIALS)
            if failures:
                await self._failures.succeeded(username)
        if credentials.disabled:
            # Told only after the right password, so that the answer reveals nothing to a guesser.
            raise Forbidden("this account is disabled; ask an admin", code=ErrorCode.ACCOUNT_DISABLED)
        # The address keeps its count: one account of one's own must not reset guessing at others.
        return await self._start(credentials.user, device_id)

    async def login_bot(self, token: str, device_id: str, *, address: str = "") -> Session:
        """Start a session for the bot the token belongs to (``im admin bots create``).

        A wrong token counts against the client ``address`` like a wrong password; the token itself is
        random and long, so there is no username to throttle.
        """
        wait = self._addresses.wait(address)
        if wait:
            raise RateLimited("too many failed logins from your address; wait", retry_after=_seconds(wait))
        bot = None if self._admin is None else await self._admin.bot_by_token(bot_token_hash(token))
        if bot is None:
            self._addresses.failed(address)
            raise Unauthorized("the bot token is unknown or revoked", code=ErrorCode.INVALID_CREDENTIALS)
        if bot.disabled_at is not None:
            raise Forbidden("this bot account is disabled; ask an admin", code=ErrorCode.ACCOUNT_DISABLED)
        return await self._start(User.model_validate(bot.model_dump(include=set(User.model_fields))), device_id)

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
            if await self._devices.end_reused(_refresh_hash(refresh_token)):
                raise Unauthorized("this refresh token was used before; the session is ended, log in again")
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
