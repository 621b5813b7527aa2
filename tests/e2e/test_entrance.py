"""Entrance protection against a real cluster: login throttling, registrations, the Argon2 queue,
refresh-token reuse, key rotation."""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx
import websockets

from im_schema.limits import CLOSE_SESSION_REVOKED
from im_schema.rest import GatewayRequest
from im_sdk import AsyncClient
from tests.support.cluster import FAST, PASSWORD, TestCluster

SLOW_BACKOFF = {"login_backoff": 60.0, "login_backoff_max": 600.0}
"""Waits far longer than any test: time passing is simulated by :func:`_time_passes`."""


def _name() -> str:
    return f"u{secrets.token_hex(5)}"


async def _register(http: httpx.AsyncClient, username: str, **headers: str) -> httpx.Response:
    return await http.post("/v1/auth/register", json={"username": username, "password": PASSWORD}, headers=headers)


async def _login(http: httpx.AsyncClient, username: str, password: str, **headers: str) -> httpx.Response:
    body = {"username": username, "password": password, "device": "dev1"}
    return await http.post("/v1/auth/login", json=body, headers=headers)


def _codes(responses: list[httpx.Response]) -> list[int]:
    return [response.status_code for response in responses]


async def _time_passes(cluster: TestCluster) -> None:
    """Every account's wait is over (as if the clock had moved on): the shared state is in the database."""
    from sqlalchemy import update

    from im_server.storage.tables import login_failures

    def expire(conn):
        conn.execute(update(login_failures).values(wait_until=0))

    await cluster.loop.call(cluster.api.node.db.write(expire))


def _throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["retry_after"] > 0
    assert int(response.headers["retry-after"]) >= 1


async def test_failed_logins_back_off_per_account_across_api_nodes(make_cluster):
    cluster: TestCluster = make_cluster(gateways=0, login_free_failures=2, **SLOW_BACKOFF)
    second = cluster.add_api()
    username = _name()
    async with httpx.AsyncClient(base_url=cluster.url) as one, httpx.AsyncClient(base_url=second.url) as two:
        assert (await _register(one, username)).status_code == 201
        # Two free failures, the third earns a wait: seen by the other API node (the state is in the database).
        assert _codes([await _login(one, username, "wrong password") for _ in range(3)]) == [401, 401, 401]
        _throttled(await _login(two, username, PASSWORD))
        _throttled(await _login(one, username, "wrong password"))
        # Once the wait is over the right password works, and it clears the failures.
        await _time_passes(cluster)
        assert (await _login(two, username, PASSWORD)).status_code == 200
        assert _codes([await _login(one, username, "wrong password") for _ in range(3)]) == [401, 401, 401]


async def test_waits_double_up_to_the_cap(make_cluster):
    cluster = make_cluster(gateways=0, login_free_failures=0, login_backoff=30.0, login_backoff_max=600.0)
    username = _name()
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        assert (await _login(http, username, "wrong password")).status_code == 401
        response = await _login(http, username, "wrong password")
        _throttled(response)
        assert 0 < response.json()["error"]["retry_after"] <= 30
        assert 1 <= int(response.headers["retry-after"]) <= 30


def test_backoff_policy_and_address_tracker():
    from im_server.services.ratelimit import Backoff, FailureTracker

    backoff = Backoff(free=3, first=1.0, longest=4.0)
    assert [backoff.wait(n) for n in range(1, 8)] == [0, 0, 0, 1.0, 2.0, 4.0, 4.0]
    assert backoff.wait(10**9) == 4.0 and backoff.wait_ms(5) == 2000
    now = [0.0]
    tracker = FailureTracker(Backoff(free=1, first=1.0, longest=8.0), ttl=100.0, max_keys=2, clock=lambda: now[0])
    assert tracker.failed("a") == 0 and tracker.wait("a") == 0
    assert tracker.failed("a") == 1.0 and tracker.wait("a") == 1.0
    now[0] = 0.5
    assert tracker.wait("a") == 0.5
    now[0] = 1.0
    assert tracker.wait("a") == 0 and tracker.failed("a") == 2.0
    now[0] = 200.0  # past the TTL: forgotten
    assert tracker.wait("a") == 0 and tracker.failed("a") == 0
    tracker.failed("b")
    tracker.failed("c")  # at most two addresses kept: the oldest goes
    assert tracker.failed("a") == 0
    tracker.succeeded("b")
    assert tracker.failed("b") == 0


async def test_unknown_usernames_are_throttled_the_same_way(make_cluster):
    cluster = make_cluster(gateways=0, login_free_failures=2, **SLOW_BACKOFF)
    known, unknown = _name(), _name()
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        await _register(http, known)
        answers = {}
        for username in (known, unknown):
            responses = [await _login(http, username, "wrong password") for _ in range(4)]
            answers[username] = [(r.status_code, r.json()["error"]["code"]) for r in responses]
        assert (
            answers[known]
            == answers[unknown]
            == [
                (401, "invalid_credentials"),
                (401, "invalid_credentials"),
                (401, "invalid_credentials"),
                (429, "rate_limited"),
            ]
        )


async def test_failed_logins_back_off_per_address(make_cluster):
    cluster = make_cluster(
        gateways=0,
        login_free_failures=100,
        login_address_free_failures=3,
        trusted_proxies=["127.0.0.1/32"],
        **SLOW_BACKOFF,
    )
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    neighbour = {"X-Forwarded-For": "203.0.113.8, 10.9.9.9"}  # a hop the proxy added: not trusted
    victim = _name()
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        await _register(http, victim)
        # Guessing different accounts from one address: the address is throttled after 3 failures...
        assert _codes([await _login(http, _name(), "guess", **attacker) for _ in range(4)]) == [401] * 4
        _throttled(await _login(http, victim, PASSWORD, **attacker))
        # ...other addresses are not, and the victim's account was never touched.
        assert (await _login(http, victim, PASSWORD, **neighbour)).status_code == 200
        # Even the right password waits from there (the address, not the account, is throttled).
        _throttled(await _login(http, victim, PASSWORD, **{"X-Forwarded-For": "203.0.113.7"}))


async def test_forwarded_for_is_ignored_from_untrusted_peers(make_cluster):
    cluster = make_cluster(gateways=0, login_free_failures=100, login_address_free_failures=1, **SLOW_BACKOFF)
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        # Without IM_TRUSTED_PROXIES a client cannot pick a fresh address per guess.
        await _login(http, _name(), "guess", **{"X-Forwarded-For": "198.51.100.1"})
        await _login(http, _name(), "guess", **{"X-Forwarded-For": "198.51.100.2"})
        _throttled(await _login(http, _name(), "guess", **{"X-Forwarded-For": "198.51.100.3"}))


async def test_registrations_are_limited_per_address(make_cluster):
    cluster = make_cluster(gateways=0, register_rate=0.0001, register_burst=2, trusted_proxies=["127.0.0.0/8"])
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        here = {"X-Forwarded-For": "2001:db8::1"}
        assert _codes([await _register(http, _name(), **here) for _ in range(2)]) == [201, 201]
        _throttled(await _register(http, _name(), **here))
        assert (await _register(http, _name(), **{"X-Forwarded-For": "2001:db8::2"})).status_code == 201


async def test_password_hashing_is_bounded(make_cluster):
    cluster = make_cluster(gateways=0, argon2_concurrency=1, argon2_queue=1)
    username = _name()
    hashing = cluster.api.node.auth.hashing
    release = asyncio.Event()

    async def hold() -> None:
        async with hashing.slot():
            await release.wait()

    async with httpx.AsyncClient(base_url=cluster.url) as http:
        await _register(http, username)
        holder = asyncio.run_coroutine_threadsafe(hold(), cluster.loop.loop)
        await cluster.until(lambda: hashing.running == 1)
        # One login may wait for the slot; the next finds the queue full and is told to come back.
        queued = asyncio.create_task(_login(http, username, PASSWORD))
        await cluster.until(lambda: hashing.waiting == 1)
        refused = await _login(http, _name(), PASSWORD)  # another name: logins of one name queue apart
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "unavailable" and refused.headers["retry-after"] == "1"
        cluster.loop.loop.call_soon_threadsafe(release.set)
        assert (await queued).status_code == 200
        await asyncio.wrap_future(holder)
        assert (await _login(http, username, PASSWORD)).status_code == 200


async def test_a_reused_refresh_token_ends_the_whole_family(make_cluster):
    cluster = make_cluster(gateways=1)
    alice = await cluster.user("alice")
    try:
        first = alice.session
        async with httpx.AsyncClient(base_url=cluster.url) as http:
            rotated = await http.post("/v1/auth/refresh", json={"refresh_token": first.refresh_token})
            assert rotated.status_code == 200
            second = rotated.json()
            auth = {"Authorization": f"Bearer {second['access_token']}"}
            assignment = await alice.request(GatewayRequest())
            async with websockets.connect(assignment.url) as ws:
                await ws.send(json.dumps({"type": "auth", "token": second["access_token"], "protocol": 1}))
                assert json.loads(await ws.recv())["type"] == "ready"
                assert (await http.get("/v1/me", headers=auth)).status_code == 200
                # The old refresh token comes back (stolen, or replayed): the session ends everywhere.
                replay = await http.post("/v1/auth/refresh", json={"refresh_token": first.refresh_token})
                assert replay.status_code == 401 and "used before" in replay.json()["error"]["message"]
                async with asyncio.timeout(10):
                    await ws.wait_closed()
                assert ws.close_code == CLOSE_SESSION_REVOKED
            assert (await http.get("/v1/me", headers=auth)).status_code == 401
            newest = await http.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
            assert newest.status_code == 401
            # An unknown token is just refused; logging in again works.
            unknown = await http.post("/v1/auth/refresh", json={"refresh_token": "x" * 43})
            assert unknown.status_code == 401 and "used before" not in unknown.json()["error"]["message"]
        assert (await _login_client(cluster, alice.session.user.username)).session is not None
    finally:
        await alice.aclose()


async def _login_client(cluster: TestCluster, username: str) -> AsyncClient:
    client = AsyncClient(cluster.url, backoff=FAST)
    await client.login(username, PASSWORD, device="dev1")
    await client.aclose()
    return client


async def test_signing_keys_rotate_without_logging_anyone_out(make_cluster):
    old_key, new_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    cluster = make_cluster(gateways=0, secret_key=None, signing_keys=f"k1:{old_key}")
    alice = await cluster.user("alice")
    old_token = alice.session.access_token
    assert old_token.split(".")[1] == "k1"
    cluster.stop()
    # Every node learns k2 and signs with it; k1 tokens still verify.
    rotated = make_cluster(
        gateways=0,
        db_url=cluster.settings.db_url,
        subject_prefix=cluster.settings.subject_prefix,
        secret_key=None,
        signing_keys=f"k2:{new_key},k1:{old_key}",
    )
    async with httpx.AsyncClient(base_url=rotated.url) as http:
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {old_token}"})).status_code == 200
        fresh = (await _login(http, alice.session.user.username, PASSWORD)).json()["access_token"]
        assert fresh.split(".")[1] == "k2"
    rotated.stop()
    # k1 retired: its tokens stop verifying, k2's keep working.
    retired = make_cluster(
        gateways=0,
        db_url=cluster.settings.db_url,
        subject_prefix=cluster.settings.subject_prefix,
        secret_key=None,
        signing_keys=f"k2:{new_key}",
    )
    async with httpx.AsyncClient(base_url=retired.url) as http:
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {old_token}"})).status_code == 401
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    await alice.aclose()


async def test_a_repeated_good_login_skips_argon2_and_a_wrong_password_never_does(make_cluster):
    cluster = make_cluster(gateways=0, metrics_token="metrics-token-of-the-test")
    auth = cluster.api.node.auth
    username = _name()
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        await _register(http, username)
        for _ in range(3):
            assert (await _login(http, username, PASSWORD)).status_code == 200
        assert auth.password_checks == {"argon2": 1, "remembered": 2}
        # A wrong password is checked the long way, whatever is remembered, and still counts as a failure.
        assert (await _login(http, username, "not the password")).status_code == 401
        assert auth.password_checks == {"argon2": 2, "remembered": 2}
        metrics = (await http.get("/metrics", headers={"Authorization": "Bearer metrics-token-of-the-test"})).text
        assert 'im_password_checks_total{how="remembered"} 2.0' in metrics
