"""Pure parts of entrance protection: access lists, the client address behind proxies, the work queue,
the frame bucket."""

from __future__ import annotations

import asyncio

import pytest

from im_server.cluster.access import entry_key
from im_server.services.access import AccessRules, client_address, parse_address, parse_network
from im_server.services.ratelimit import BusyError, TokenBucket, WorkLimiter


def rules(allow=(), deny=()):
    return AccessRules.of([("allow", parse_network(c)) for c in allow] + [("deny", parse_network(c)) for c in deny])


def test_empty_lists_admit_everyone():
    assert AccessRules().admits("203.0.113.1") and AccessRules().admits("") and AccessRules().admits("garbage")


def test_deny_list():
    r = rules(deny=["10.0.0.0/8", "2001:db8::/32"])
    assert not r.admits("10.1.2.3")
    assert not r.admits("::ffff:10.1.2.3")  # IPv4-mapped IPv6 is the IPv4 address
    assert not r.admits("2001:db8::5")
    assert r.admits("11.0.0.1") and r.admits("2001:db9::1")
    assert not r.admits("not an address") and not r.admits("")


def test_allow_list_and_deny_wins():
    r = rules(allow=["192.0.2.0/24", "fd00::/8"], deny=["192.0.2.66/32"])
    assert r.admits("192.0.2.1") and r.admits("fd12::1")
    assert not r.admits("192.0.2.66")  # denied inside an allowed network
    assert not r.admits("198.51.100.1") and not r.admits("2001:db8::1")


@pytest.mark.parametrize("text", ["10.0.0.0/33", "nonsense", "1.2.3.4/-1", "::/129", ""])
def test_bad_cidrs(text):
    with pytest.raises(ValueError, match=r"does not appear to be|xpected|refix"):
        parse_network(text)


def test_cidrs_are_normalised_and_keyed():
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8"
    assert str(parse_network("2001:db8::1")) == "2001:db8::1/128"
    assert entry_key("deny", parse_network("10.0.0.0/8")) == "deny.4-0a000000-8"
    key = entry_key("allow", parse_network("2001:db8::/32"))
    assert key == "allow.6-20010db8000000000000000000000000-32"
    assert all(c.isalnum() or c in "-_." for c in key)  # a valid KV key


def test_parse_address():
    assert str(parse_address("[2001:db8::1]")) == "2001:db8::1"
    assert str(parse_address("fe80::1%eth0")) == "fe80::1"
    assert parse_address("1.2.3") is None and parse_address("") is None


def test_client_address_behind_trusted_proxies():
    proxies = [parse_network("10.0.0.0/8"), parse_network("::1/128")]
    # Not from a proxy: the header is the client's own words, ignored.
    assert client_address("203.0.113.9", ["1.1.1.1"], proxies) == "203.0.113.9"
    assert client_address("203.0.113.9", ["1.1.1.1"], []) == "203.0.113.9"
    # From a proxy: the nearest hop that is not a proxy.
    assert client_address("10.0.0.1", ["6.6.6.6, 198.51.100.4, 10.0.0.2"], proxies) == "198.51.100.4"
    assert client_address("10.0.0.1", ["6.6.6.6", "198.51.100.4"], proxies) == "198.51.100.4"
    assert client_address("::1", ["2001:db8::7"], proxies) == "2001:db8::7"
    # No header, or only proxies in it.
    assert client_address("10.0.0.1", [], proxies) == "10.0.0.1"
    assert client_address("10.0.0.1", ["10.0.0.3, 10.0.0.2"], proxies) == "10.0.0.3"
    # Garbage in the header is never trusted, and is bounded.
    assert client_address("10.0.0.1", ["x" * 500], proxies) == "x" * 64
    assert client_address("::ffff:10.0.0.1", ["192.0.2.1"], proxies) == "192.0.2.1"


async def test_work_limiter_bounds_running_and_waiting():
    limiter = WorkLimiter(concurrency=1, queue=1)
    release = asyncio.Event()

    async def job() -> None:
        async with limiter.slot():
            await release.wait()

    first = asyncio.create_task(job())
    await asyncio.sleep(0)
    second = asyncio.create_task(job())
    await asyncio.sleep(0)
    assert (limiter.running, limiter.waiting) == (1, 1)
    with pytest.raises(BusyError):
        async with limiter.slot():
            pass
    release.set()
    await asyncio.gather(first, second)
    assert (limiter.running, limiter.waiting) == (0, 0)
    async with limiter.slot():
        assert limiter.running == 1


async def test_a_cancelled_waiter_gives_its_place_back():
    limiter = WorkLimiter(concurrency=1, queue=1)
    release = asyncio.Event()

    async def job() -> None:
        async with limiter.slot():
            await release.wait()

    first = asyncio.create_task(job())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(job())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert limiter.waiting == 0
    release.set()
    await first
    assert limiter.running == 0


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == 0.5
    now[0] = 0.5
    assert bucket.take() == 0 and bucket.take() == 0.5
    now[0] = 100.0
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 0.5]  # never more than the burst saved up


def test_trusted_proxies_setting(monkeypatch):
    from im_server.settings import Settings

    monkeypatch.setenv("IM_TRUSTED_PROXIES", "10.1.2.3/8, 2001:db8::1 ,")
    assert Settings().trusted_proxies == ["10.0.0.0/8", "2001:db8::1/128"]
    monkeypatch.setenv("IM_TRUSTED_PROXIES", "['10.0.0.0/8', '192.168.0.0/16']")  # as a dumped model writes it
    assert Settings().trusted_proxies == ["10.0.0.0/8", "192.168.0.0/16"]
    monkeypatch.setenv("IM_TRUSTED_PROXIES", "not-a-network")
    with pytest.raises(ValueError, match="IM_TRUSTED_PROXIES"):
        Settings()


def test_verified_passwords_match_only_the_same_password_hash_and_age():
    from im_server.services.auth import VerifiedPasswords

    now = [0.0]
    verified = VerifiedPasswords(2, ttl=60.0, clock=lambda: now[0])
    verified.remember("alice", "hash-1", "secret")
    assert verified.matches("alice", "hash-1", "secret")
    assert not verified.matches("alice", "hash-1", "Secret")
    assert not verified.matches("bob", "hash-1", "secret")
    assert not verified.matches("alice", "hash-2", "secret")  # the password changed: forgotten
    assert not verified.matches("alice", "hash-1", "secret")
    verified.remember("alice", "hash-1", "secret")
    now[0] = 61.0
    assert not verified.matches("alice", "hash-1", "secret")  # too old: Argon2 again
    for name in ("a1", "a2", "a3"):
        verified.remember(name, "h", "p")
    assert len(verified) == 2 and not verified.matches("a1", "h", "p")
    off = VerifiedPasswords(0, ttl=60.0)
    off.remember("alice", "hash-1", "secret")
    assert not off.matches("alice", "hash-1", "secret")
