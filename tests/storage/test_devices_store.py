"""Device sessions with a limit, and revocations: the storage contract on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from im_server.storage import UserStore
from im_server.storage.devices import DeviceStore, Revoked, SessionStart, TooManyDevices

T0 = 1_700_000_000_000  # ms
DAY = 86_400_000


@pytest.fixture
async def uid(db):
    return (await UserStore(db).create_user("alice", "hash", "Alice", now=T0)).id


@pytest.fixture
def devices(db):
    return DeviceStore(db)


async def login(devices, uid, device, session, *, now=T0, limit=3, expires=T0 + DAY):
    return await devices.start_session(
        uid,
        device,
        session_id=session,
        refresh_hash=f"hash-{session}",
        refresh_expires_at=expires,
        now=now,
        max_devices=limit,
        revoke_until=now + 1000,
    )


async def test_the_limit_counts_live_sessions_and_a_device_logging_in_again_replaces_its_own(devices, uid):
    for number in range(3):
        session, replaced = await login(devices, uid, f"d{number}", f"s{number}", now=T0 + number)
        assert (session.device_id, replaced) == (f"d{number}", None)
    with pytest.raises(TooManyDevices) as refused:
        await login(devices, uid, "d3", "s3")
    assert [item.device_id for item in refused.value.sessions] == ["d0", "d1", "d2"]

    session, replaced = await login(devices, uid, "d1", "s1b", now=T0 + 10)
    assert session.session_id == "s1b"
    assert replaced == Revoked("s1", uid, "d1", T0 + 10 + 1000)
    assert [item.device_id for item in await devices.sessions(uid, now=T0 + 10)] == ["d0", "d2", "d1"]


async def test_expired_sessions_do_not_count_and_are_removed(devices, uid):
    await login(devices, uid, "old", "s0", expires=T0 + 5)
    await login(devices, uid, "d1", "s1", limit=2)
    later = T0 + 10
    assert [item.device_id for item in await devices.sessions(uid, now=later)] == ["d1"]
    await login(devices, uid, "d2", "s2", now=later, limit=2)
    assert [item.device_id for item in await devices.sessions(uid, now=later)] == ["d1", "d2"]


async def test_ending_sessions_revokes_them(devices, uid):
    for number in range(3):
        await login(devices, uid, f"d{number}", f"s{number}")
    [one] = await devices.end_devices(uid, "d1", now=T0, revoke_until=T0 + 500)
    assert one == Revoked("s1", uid, "d1", T0 + 500)
    assert await devices.end_devices(uid, "d1", now=T0, revoke_until=T0 + 500) == []
    # A logout with a token of a replaced session revokes that session and leaves the device alone.
    stale = await devices.end_session(uid, "d0", "not-the-current-one", now=T0, revoke_until=T0 + 500)
    assert stale.session_id == "not-the-current-one"
    assert [item.device_id for item in await devices.sessions(uid, now=T0)] == ["d0", "d2"]
    rest = await devices.end_devices(uid, None, now=T0, revoke_until=T0 + 600)
    assert [(item.device_id, item.session_id) for item in rest] == [("d0", "s0"), ("d2", "s2")]
    assert await devices.sessions(uid, now=T0) == []
    in_force = {item.session_id for item in await devices.revocations(now=T0)}
    assert in_force == {"s1", "not-the-current-one", "s0", "s2"}
    assert {item.session_id for item in await devices.revocations(now=T0 + 550)} == {"s0", "s2"}


async def test_old_revocations_are_dropped_by_later_ones(devices, uid):
    await login(devices, uid, "d0", "s0")
    await devices.end_devices(uid, None, now=T0, revoke_until=T0 + 100)
    await devices.end_session(uid, "d9", "s9", now=T0 + 200, revoke_until=T0 + 300)
    assert [item.session_id for item in await devices.revocations(now=0)] == ["s9"]


async def test_concurrent_logins_never_pass_the_limit(devices, uid):
    await login(devices, uid, "d0", "s0")
    results = await asyncio.gather(
        *(login(devices, uid, f"new{i}", f"n{i}", limit=3) for i in range(6)), return_exceptions=True
    )
    assert sum(not isinstance(result, BaseException) for result in results) == 2
    assert all(isinstance(result, TooManyDevices) for result in results if isinstance(result, BaseException))
    assert len(await devices.sessions(uid, now=T0)) == 3


def _start(uid, device, session):
    return SessionStart(uid, device, session, f"hash-{session}", T0 + DAY)


async def test_a_batch_of_logins_gives_each_its_own_outcome_and_a_refused_one_undoes_nothing(devices, uid):
    other = (await UserStore(devices._db).create_user("bob", "hash", "Bob", now=T0)).id
    await login(devices, uid, "d0", "s0", limit=2)
    outcomes = await devices.start_sessions(
        [
            _start(uid, "d1", "s1"),  # takes the last place
            _start(other, "b0", "t0"),
            _start(uid, "d2", "s2"),  # one too many: refused
            _start(uid, "d0", "s0b"),  # the same device again: replaces s0
            _start(other, "b0", "t1"),  # twice in one batch: the second replaces the first
        ],
        now=T0 + 5,
        max_devices=2,
        revoke_until=T0 + 1000,
    )
    first, second, refused, again, twice = outcomes
    assert (first[0].session_id, first[1]) == ("s1", None)
    assert (second[0].session_id, second[1]) == ("t0", None)
    assert isinstance(refused, TooManyDevices)
    assert [item.device_id for item in refused.sessions] == ["d0", "d1"]
    assert again[1] == Revoked("s0", uid, "d0", T0 + 1000)
    assert twice[1] == Revoked("t0", other, "b0", T0 + 1000)
    assert {(item.device_id, item.session_id) for item in await devices.sessions(uid, now=T0 + 5)} == {
        ("d1", "s1"),
        ("d0", "s0b"),
    }
    assert [item.session_id for item in await devices.sessions(other, now=T0 + 5)] == ["t1"]
    assert {item.session_id for item in await devices.revocations(now=T0 + 5)} == {"s0", "t0"}
