"""Several devices of one user across two gateways and two API nodes: delivery to every device, the device
list, logging devices out everywhere at once, and the per-account device limit."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from im_schema.limits import CLOSE_SESSION_REVOKED
from im_schema.rest import GatewayRequest
from im_sdk import AsyncClient, AuthenticationError, NotFoundError, TooManyDevicesError
from tests.e2e.conftest import wait_connected
from tests.support.cluster import FAST, PASSWORD, TestCluster


@pytest.fixture
def cluster(shared_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster per database."""
    return shared_cluster


def _other_gateway_device(cluster: TestCluster, client: AsyncClient, prefix: str) -> str:
    """A device name of the client's user that rendezvous hashing puts on another gateway."""
    session = client.session
    assert session is not None
    node = cluster.api.node  # type: ignore[union-attr]
    home = node.assign_gateway(session.user.id, session.device_id).node_id
    for attempt in range(100):
        name = f"{prefix}{attempt}"
        if node.assign_gateway(session.user.id, name).node_id != home:
            return name
    raise AssertionError("rendezvous hashing put 100 devices on one node")


async def _login(url: str, of: AsyncClient, device: str) -> AsyncClient:
    assert of.session is not None
    client = AsyncClient(url, backoff=FAST)
    await client.login(of.session.user.username, PASSWORD, device=device)
    return client


async def _raw_connection(client: AsyncClient, token: str):
    """A bare WebSocket authenticated with ``token``; returns it and the first frame the gateway sent."""
    assignment = await client.request(GatewayRequest())
    ws = await websockets.connect(assignment.url)
    await ws.send(json.dumps({"type": "auth", "token": token, "protocol": 1}))
    return ws, json.loads(await ws.recv())


async def _stopped(inbox, timeout: float = 10) -> BaseException | None:
    """Wait for an inbox's events() to end; its error."""
    await asyncio.wait([inbox._task], timeout=timeout)
    assert inbox._task.done(), "events() kept running"
    return inbox.error


async def test_every_device_sees_every_message_in_order(cluster, inboxes, closing):
    alice = await cluster.user("alice", device="phone")
    laptop = await cluster.device(alice, _other_gateway_device(cluster, alice, "laptop"))
    bob = await cluster.user("bob")
    closing += [alice, laptop, bob]
    phone_in, laptop_in, bob_in = inboxes(alice), inboxes(laptop), inboxes(bob)
    nodes = {await wait_connected(cluster, client) for client in (alice, laptop)}
    assert len(nodes) == 2, "the two devices should be on different gateways"
    await wait_connected(cluster, bob)

    alice_id, bob_id = alice.session.user.id, bob.session.user.id
    script = [
        (bob, alice_id, "b1"),
        (alice, bob_id, "from phone"),
        (bob, alice_id, "b2"),
        (laptop, bob_id, "from laptop"),
        (alice, bob_id, "phone again"),
        (bob, alice_id, "b3"),
    ]
    for sender, to, text in script:
        await sender.send_text(to, text)

    everything = [text for _, _, text in script]
    # Each device sees the others' messages, its own user's from the other device included, in seq order;
    # never what it sent itself.
    phone_got = await phone_in.take(4)
    assert [e.text for e in phone_got] == ["b1", "b2", "from laptop", "b3"]
    laptop_got = await laptop_in.take(5)
    assert [e.text for e in laptop_got] == ["b1", "from phone", "b2", "phone again", "b3"]
    bob_got = await bob_in.take(3)
    assert [e.text for e in bob_got] == ["from phone", "from laptop", "phone again"]
    for got in (phone_got, laptop_got, bob_got):
        assert [e.seq for e in got] == sorted(e.seq for e in got)
    assert [e.seq for e in laptop_got] == [1, 2, 3, 5, 6]
    page = await bob.history(phone_got[0].conversation, after=0)
    assert [m.content.text for m in page.messages] == everything


async def test_device_list_shows_connections_and_the_current_device(cluster, inboxes, closing):
    alice = await cluster.user("alice", device="phone")
    laptop = await cluster.device(alice, "laptop")
    closing += [alice, laptop]
    inboxes(laptop)
    await wait_connected(cluster, laptop)

    devices = await alice.devices.list()
    assert [(d.device_id, d.current, d.connected) for d in devices] == [
        ("phone", True, False),
        ("laptop", False, True),
    ]
    assert devices[0].created_at <= devices[1].created_at
    assert [d.current for d in await laptop.devices.list()] == [False, True]


async def test_logout_through_another_api_node_disconnects_and_refuses_at_once(cluster, inboxes, closing):
    second_api = cluster.add_api()
    alice = await cluster.user("alice", device="phone")
    laptop = await cluster.device(alice, _other_gateway_device(cluster, alice, "laptop"))
    tablet = await cluster.device(alice, "tablet")
    phone_on_second = await _login(second_api.url, alice, "phone")  # replaces the first phone session
    closing += [alice, laptop, tablet, phone_on_second]
    laptop_in = inboxes(laptop)
    await wait_connected(cluster, laptop)
    laptop_token = laptop.session.access_token
    ws, ready = await _raw_connection(tablet, tablet.session.access_token)
    assert ready["type"] == "ready"

    laptop_name = laptop.session.device_id
    result = await phone_on_second.devices.logout(laptop_name)
    assert (result.devices, result.current) == ([laptop_name], False)

    # Refused at once, by both API nodes and by a gateway, and the refresh token is dead too.
    with pytest.raises(AuthenticationError) as refused:
        await laptop.whoami()
    assert refused.value.code == "unauthorized" and "logged out" in refused.value.message
    async with AsyncClient(second_api.url, access_token=laptop_token) as on_second:
        with pytest.raises(AuthenticationError):
            await on_second.whoami()
    probe, answer = await _raw_connection(tablet, laptop_token)
    assert answer["type"] == "error" and answer["code"] == "unauthorized"
    await probe.wait_closed()
    assert probe.close_code == CLOSE_SESSION_REVOKED
    with pytest.raises(AuthenticationError):
        await laptop.refresh()

    # Its live connection was closed with 4012, and events() gave up with AuthenticationError.
    error = await _stopped(laptop_in)
    assert isinstance(error, AuthenticationError) and "logged out" in error.message

    # The other devices are untouched; the replaced phone session is refused too.
    assert (await tablet.whoami()).device_id == "tablet"
    with pytest.raises(AuthenticationError):
        await alice.whoami()
    assert [d.device_id for d in await tablet.devices.list()] == ["tablet", "phone"]

    # Logging out all devices closes the rest, this one included, and forgets this client's tokens.
    everything = await tablet.devices.logout_all()
    assert (sorted(everything.devices), everything.current) == (["phone", "tablet"], True)
    assert tablet.session is None
    await ws.wait_closed()
    assert ws.close_code == CLOSE_SESSION_REVOKED
    with pytest.raises(AuthenticationError):
        await phone_on_second.whoami()
    with pytest.raises(AuthenticationError):
        await phone_on_second.devices.list()


async def test_logging_out_this_device_ends_its_own_events(cluster, inboxes, closing):
    alice = await cluster.user("alice")
    closing.append(alice)
    inbox = inboxes(alice)
    await wait_connected(cluster, alice)
    token = alice.session.access_token
    await alice.logout()
    error = await _stopped(inbox)
    assert isinstance(error, AuthenticationError)
    async with AsyncClient(cluster.url, access_token=token) as stale:
        with pytest.raises(AuthenticationError):
            await stale.whoami()


async def test_device_limit(cluster, closing):
    limit = cluster.settings.max_devices
    first = await cluster.user("alice", device="d0")
    closing.append(first)
    clients = [first]
    for index in range(1, limit):
        clients.append(await cluster.device(first, f"d{index}"))
    closing.extend(clients[1:])

    extra = AsyncClient(cluster.url)
    closing.append(extra)
    with pytest.raises(TooManyDevicesError) as refused:
        await extra.login(first.session.user.username, PASSWORD, device="one-more")
    assert refused.value.code == "too_many_devices" and refused.value.status == 409
    assert [item["device_id"] for item in refused.value.details] == [f"d{i}" for i in range(limit)]

    # Logging in again on a device it has replaces that device's session (the old token stops working).
    old_token = clients[3].session.access_token
    again = await _login(cluster.url, first, "d3")
    closing.append(again)
    async with AsyncClient(cluster.url, access_token=old_token) as stale:
        with pytest.raises(AuthenticationError):
            await stale.whoami()
    assert len(await again.devices.list()) == limit

    # Once one is logged out there is room for exactly one more, even when several race for it.
    await again.devices.logout("d1")
    racers = [AsyncClient(cluster.url) for _ in range(4)]
    closing.extend(racers)
    results = await asyncio.gather(
        *(racer.login(first.session.user.username, PASSWORD, device=f"new{i}") for i, racer in enumerate(racers)),
        return_exceptions=True,
    )
    assert sum(not isinstance(result, BaseException) for result in results) == 1
    assert all(isinstance(result, TooManyDevicesError) for result in results if isinstance(result, BaseException))
    assert len(await again.devices.list()) == limit


async def test_unknown_device_is_not_found(cluster, closing):
    alice = await cluster.user("alice")
    closing.append(alice)
    with pytest.raises(NotFoundError) as missing:
        await alice.devices.logout("nope")
    assert missing.value.code == "device_not_found"


async def test_a_new_login_of_a_device_closes_the_old_session_at_once(cluster, inboxes, closing):
    alice = await cluster.user("alice", device="laptop")
    closing.append(alice)
    inbox = inboxes(alice)
    await wait_connected(cluster, alice)
    again = await cluster.device(alice, "laptop")  # the same device id, logged in from elsewhere
    closing.append(again)
    error = await _stopped(inbox)
    assert isinstance(error, AuthenticationError) and "logged out" in error.message
    assert (await again.whoami()).device_id == "laptop"


async def test_logins_that_arrive_together_each_end_the_session_they_replace(cluster, closing):
    # Logins stored together (one transaction, one revocation barrier) must each still revoke the session
    # they replace: its connection closes with 4012 and its token cannot come back on a new connection.
    alice = await cluster.user("alice", device="d0")
    devices = [alice, *[await cluster.device(alice, f"d{number}") for number in range(1, 6)]]
    bob = await cluster.user("bob", device="b0")
    closing += [*devices, bob]
    users = [*devices, bob]
    old_tokens = [client.session.access_token for client in users]
    old_sockets = []
    for client, token in zip(users, old_tokens, strict=True):
        ws, ready = await _raw_connection(client, token)
        assert ready["type"] == "ready"
        old_sockets.append(ws)

    again = await asyncio.gather(*(_login(cluster.url, client, client.session.device_id) for client in users))
    closing += again

    for ws in old_sockets:
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == CLOSE_SESSION_REVOKED
    for client, token in zip(again, old_tokens, strict=True):
        async with AsyncClient(cluster.url, access_token=token) as stale:
            with pytest.raises(AuthenticationError):
                await stale.whoami()
        probe, answer = await _raw_connection(client, token)
        assert answer["type"] == "error" and answer["code"] == "unauthorized"
        await probe.close()
        fresh, ready = await _raw_connection(client, client.session.access_token)
        assert ready["type"] == "ready"
        await fresh.close()
    assert sorted(d.device_id for d in await again[0].devices.list()) == [f"d{number}" for number in range(6)]
