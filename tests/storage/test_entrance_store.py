"""Login failures and rotated refresh tokens: the storage contract on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from im_server.services.ratelimit import Backoff
from im_server.storage import UserStore
from im_server.storage.devices import DeviceStore
from im_server.storage.entrance import LoginFailureStore

T0 = 1_700_000_000_000  # ms
DAY = 86_400_000
BACKOFF = Backoff(free=2, first=1.0, longest=8.0)


async def test_failures_earn_doubling_waits_and_a_success_clears_them(db):
    store = LoginFailureStore(db)
    assert await store.state("alice", now=T0) == (0, 0)
    waits = [await store.failed("alice", BACKOFF.wait_ms, now=T0 + i, ttl_ms=DAY) for i in range(6)]
    assert waits == [0, 0, 1000, 2000, 4000, 8000]
    assert await store.state("alice", now=T0 + 5) == (8000, 6)
    assert await store.state("alice", now=T0 + 5 + 8000) == (0, 6)
    assert await store.state("bob", now=T0) == (0, 0)
    await store.succeeded("alice")
    assert await store.state("alice", now=T0 + 10) == (0, 0)


async def test_idle_records_are_forgotten(db):
    store = LoginFailureStore(db)
    for i in range(4):
        await store.failed("alice", BACKOFF.wait_ms, now=T0 + i, ttl_ms=1000)
    # The next failure after the TTL starts counting afresh (and removes every idle record).
    assert await store.failed("alice", BACKOFF.wait_ms, now=T0 + 5000, ttl_ms=1000) == 0
    assert await store.state("alice", now=T0 + 5000) == (0, 1)


async def test_concurrent_failures_are_all_counted(db):
    store = LoginFailureStore(db)
    await asyncio.gather(*(store.failed("alice", BACKOFF.wait_ms, now=T0, ttl_ms=DAY) for _ in range(8)))
    assert (await store.state("alice", now=T0))[1] == 8


async def test_a_rotated_refresh_token_presented_again_ends_its_session(db):
    users, devices = UserStore(db), DeviceStore(db)
    uid = (await users.create_user("alice", "hash", "Alice", now=T0)).id
    await devices.start_session(
        uid,
        "phone",
        session_id="s1",
        refresh_hash="r1",
        refresh_expires_at=T0 + DAY,
        now=T0,
        max_devices=3,
        revoke_until=T0 + 1000,
    )
    assert (await users.rotate_refresh("r1", new_hash="r2", new_expires_at=T0 + 2 * DAY, now=T0 + 1)).session_id == "s1"
    assert await users.rotate_refresh("r1", new_hash="rX", new_expires_at=T0 + 2 * DAY, now=T0 + 2) is None
    assert await devices.end_reused("unknown", now=T0 + 2, revoke_until=T0 + 9) is None
    revoked = await devices.end_reused("r1", now=T0 + 2, revoke_until=T0 + 9)
    assert (revoked.session_id, revoked.device_id, revoked.user_id) == ("s1", "phone", uid)
    # The whole family: the newest refresh token is gone with the session, and the session is revoked.
    assert await users.rotate_refresh("r2", new_hash="r3", new_expires_at=T0 + 3 * DAY, now=T0 + 3) is None
    assert await devices.sessions(uid, now=T0 + 3) == []
    assert [r.session_id for r in await devices.revocations(now=T0 + 3)] == ["s1"]


async def test_reuse_after_a_new_login_of_the_device_leaves_the_new_session_alone(db):
    users, devices = UserStore(db), DeviceStore(db)
    uid = (await users.create_user("alice", "hash", "Alice", now=T0)).id

    async def login(session: str, refresh: str) -> None:
        await devices.start_session(
            uid,
            "phone",
            session_id=session,
            refresh_hash=refresh,
            refresh_expires_at=T0 + DAY,
            now=T0,
            max_devices=3,
            revoke_until=T0 + 1000,
        )

    await login("s1", "r1")
    await users.rotate_refresh("r1", new_hash="r2", new_expires_at=T0 + DAY, now=T0 + 1)
    await login("s2", "n1")  # the device logged in again: s1 is over anyway
    assert (await devices.end_reused("r1", now=T0 + 2, revoke_until=T0 + 9)).session_id == "s1"
    assert [s.session_id for s in await devices.sessions(uid, now=T0 + 2)] == ["s2"]


async def test_an_attempt_reads_the_wait_and_the_credentials_together(db):
    store = LoginFailureStore(db)
    assert await store.attempt("alice", now=T0) == (0, 0, None)
    user = await UserStore(db).create_user("alice", "the-hash", "Alice", now=T0)
    for i in range(3):
        await store.failed("alice", BACKOFF.wait_ms, now=T0 + i, ttl_ms=DAY)
    wait_ms, failures, credentials = await store.attempt("alice", now=T0 + 2)
    assert (wait_ms, failures) == (1000, 3)
    assert credentials is not None and credentials.user.id == user.id and credentials.password_hash == "the-hash"
