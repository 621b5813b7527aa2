"""The SDK heals by itself on a real cluster: lost pushes are caught up, load balancer errors retried.

Pushes that never arrived are caught up without waiting for the next message.
A push is lost here the way a gateway cut off from NATS loses it: the device's connection is taken out
of the gateway's table while a message is committed, so the delivery finds nobody. Then the client
learns that it may have missed something: a ``resync`` frame published to the gateway's subject (as a
gateway does when it regains NATS), a close with 4013 (too slow to read), or nothing at all for its
``resync_after`` seconds.

Sends answered 502, 503 or 504 by a load balancer (before or after the server stored them) are sent
again with the same ``client_msg_id``, and stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from im_schema.events import TypingNotice
from im_schema.frames import NoticeFrame, ResyncFrame
from im_schema.limits import CLOSE_TOO_SLOW
from im_sdk import AsyncClient, Client, TypingEvent
from im_sdk._async_client import CATCH_UP_RECENT
from im_server.bus.codec import encode_delivery
from im_server.gateway.node import GatewayNode
from tests.e2e.conftest import wait_connected
from tests.support.cluster import FAST, TestCluster


@pytest.fixture
def sqlite_cluster(module_cluster: TestCluster) -> TestCluster:
    """The module's shared cluster (see ``module_cluster``): these tests make users of their own and
    leave the nodes as they found them."""
    return module_cluster


def _gateway(cluster: TestCluster, node_id: str) -> GatewayNode:
    return next(node for node in cluster.gateways if node.node_id == node_id)


def _key(client: AsyncClient) -> tuple[int, str]:
    assert client.session is not None
    return client.session.user.id, client.session.device_id


@contextlib.contextmanager
def _pushes_lost(cluster: TestCluster, node: GatewayNode, key: tuple[int, str]) -> Iterator[Any]:
    """While inside, deliveries to the device find no connection on its gateway (they are dropped)."""

    async def take() -> Any:
        return node.connections.pop(key)

    async def put(connection: Any) -> None:
        node.connections[key] = connection

    connection = cluster.loop.run(take())
    try:
        yield connection
    finally:
        cluster.loop.run(put(connection))


def _publish_resync(cluster: TestCluster, node_id: str, key: tuple[int, str]) -> None:
    assert cluster.api is not None
    bus = cluster.api.node.bus
    payload = encode_delivery([(ResyncFrame(reason="bus regained").model_dump_json().encode(), [key])])
    cluster.loop.run(bus.nc.publish(bus.subjects.gateway(node_id), payload))


async def test_a_resync_frame_catches_up_on_the_same_connection(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing.extend([alice, bob])
    inbox = inboxes(bob)
    node_id = await wait_connected(cluster, bob)
    await alice.send_text(_key(bob)[0], "before")
    assert (await inbox.next()).text == "before"  # the first sync is over

    node = _gateway(cluster, node_id)
    with _pushes_lost(cluster, node, _key(bob)) as connection:
        await alice.send_text(_key(bob)[0], "lost push")
    _publish_resync(cluster, node_id, _key(bob))

    assert (await inbox.next()).text == "lost push"
    assert node.connections[_key(bob)] is connection  # no reconnect: the same socket


async def test_close_code_4013_reconnects_and_catches_up(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing.extend([alice, bob])
    inbox = inboxes(bob)
    node_id = await wait_connected(cluster, bob)
    await alice.send_text(_key(bob)[0], "before")
    assert (await inbox.next()).text == "before"

    node = _gateway(cluster, node_id)
    with _pushes_lost(cluster, node, _key(bob)) as connection:
        await alice.send_text(_key(bob)[0], "lost push")
    await cluster.loop.call(connection.close(CLOSE_TOO_SLOW, "outbound budget exceeded"))

    assert (await inbox.next()).text == "lost push"
    assert inbox.error is None


async def test_a_quiet_connection_resyncs_as_a_last_resort(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    bob = await cluster.user("bob", resync_after=0.2)
    closing.extend([alice, bob])
    inbox = inboxes(bob)
    node_id = await wait_connected(cluster, bob)
    await alice.send_text(_key(bob)[0], "before")
    assert (await inbox.next()).text == "before"

    node = _gateway(cluster, node_id)
    with _pushes_lost(cluster, node, _key(bob)) as connection:
        await alice.send_text(_key(bob)[0], "lost push")

    assert (await inbox.next()).text == "lost push"  # nobody told bob: the quiet period did
    assert node.connections[_key(bob)] is connection


def test_the_blocking_client_answers_a_resync_frame(sqlite_cluster):
    cluster = sqlite_cluster
    alice = cluster.loop.run(cluster.user("alice"))
    bob = cluster.loop.run(cluster.user("bob"))
    session = bob.session
    assert session is not None
    texts: list[str | None] = []
    got = [threading.Event(), threading.Event()]

    def listen() -> None:
        with Client(
            cluster.url, access_token=session.access_token, refresh_token=session.refresh_token, backoff=FAST
        ) as client:
            for event in client.messages():
                texts.append(event.text)
                got[len(texts) - 1].set()
                if len(texts) == 2:
                    break

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        node_id = asyncio.run(wait_connected(cluster, bob))
        cluster.loop.run(alice.send_text(session.user.id, "before"))
        assert got[0].wait(10)
        with _pushes_lost(cluster, _gateway(cluster, node_id), _key(bob)):
            cluster.loop.run(alice.send_text(session.user.id, "lost push"))
        _publish_resync(cluster, node_id, _key(bob))
        assert got[1].wait(10)
        thread.join(10)
        assert texts == ["before", "lost push"]
    finally:
        for client in (alice, bob):
            cluster.loop.run(client.aclose())


class LoadBalancerErrors(httpx.AsyncHTTPTransport):
    """A real transport with a flaky load balancer in front: the first ``count`` sends are answered with
    ``status`` by the balancer; with ``after=True`` the server got them (and stored the message) first."""

    def __init__(self, status: int, count: int, *, after: bool) -> None:
        super().__init__()
        self.status, self.left, self.after = status, count, after
        self.sends: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/messages":
            self.sends.append(json.loads(request.content)["client_msg_id"])
            if self.left > 0:
                self.left -= 1
                if self.after:
                    answer = await super().handle_async_request(request)
                    await answer.aread()
                return httpx.Response(self.status, headers={"Retry-After": "0"}, text="upstream trouble")
        return await super().handle_async_request(request)


@pytest.mark.parametrize(("status", "after"), [(502, False), (503, False), (504, True)])
async def test_load_balancer_errors_are_retried_and_the_message_is_stored_once(sqlite_cluster, closing, status, after):
    cluster = sqlite_cluster
    bob = await cluster.user("bob")
    transport = LoadBalancerErrors(status, 2, after=after)
    alice = await cluster.user("alice", transport=transport)
    closing.extend([alice, bob])
    assert bob.session is not None

    message = await alice.send_text(bob.session.user.id, "through a flaky balancer")

    assert len(transport.sends) == 3 and len(set(transport.sends)) == 1  # one client_msg_id throughout
    page = await bob.history(message.conversation)
    assert [(m.seq, m.client_msg_id) for m in page.messages] == [(message.seq, transport.sends[0])]


def _syncs(cluster: TestCluster, transport: CountingSyncs) -> float:
    """The "conversations since" requests made: ``sync`` frames (the gateways count them; these tests have
    one connected client) and HTTP requests through ``transport``."""
    return transport.syncs + sum(node.metrics.value("im_gateway_syncs_total") for node in cluster.gateways)


class CountingSyncs(httpx.AsyncHTTPTransport):
    """A real transport that counts the "conversations since" requests made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0
        self.histories = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/conversations":
            self.syncs += 1
        if request.method == "GET" and request.url.path.endswith("/messages"):
            self.histories += 1
        return await super().handle_async_request(request)


async def test_a_flood_of_resync_frames_costs_one_pass_per_second(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    transport = CountingSyncs()
    bob = await cluster.user("bob", transport=transport)
    closing.extend([alice, bob])
    inbox = inboxes(bob)
    node_id = await wait_connected(cluster, bob)
    await alice.send_text(_key(bob)[0], "before")
    assert (await inbox.next()).text == "before"
    after_connect = _syncs(cluster, transport)

    frames = [ResyncFrame(reason="again").model_dump_json().encode()] * 50
    marker = NoticeFrame(notice=TypingNotice(conversation="d:1:2", user_id=_key(alice)[0], active=True))
    frames.append(marker.model_dump_json().encode())  # yielded once the 50 frames before it were read
    bus = cluster.api.node.bus
    payload = encode_delivery([(frame, [_key(bob)]) for frame in frames])
    await cluster.loop.call(bus.nc.publish(bus.subjects.gateway(node_id), payload))

    assert isinstance(await inbox.event(TypingEvent), TypingEvent)
    # One pass per second at most (reading 51 frames takes far less, even on a loaded machine), not 50.
    assert _syncs(cluster, transport) - after_connect <= 2


async def test_a_short_absence_is_caught_up_by_one_request(sqlite_cluster, inboxes, closing):
    # "Conversations since" carries each conversation's newest messages: pushes lost in two
    # conversations come back with it, with no history request (a reconnect storm costs one request
    # per device). Missing more than that window falls back to history.
    cluster = sqlite_cluster
    alice, carol = await cluster.user("alice"), await cluster.user("carol")
    transport = CountingSyncs()
    bob = await cluster.user("bob", transport=transport)
    closing.extend([alice, carol, bob])
    inbox = inboxes(bob)
    node_id = await wait_connected(cluster, bob)
    await alice.send_text(_key(bob)[0], "before")
    assert (await inbox.next()).text == "before"
    syncs, histories = _syncs(cluster, transport), transport.histories

    node = _gateway(cluster, node_id)
    with _pushes_lost(cluster, node, _key(bob)):
        for text in ("lost 1", "lost 2"):
            await alice.send_text(_key(bob)[0], text)
        await carol.send_text(_key(bob)[0], "lost 3")
    _publish_resync(cluster, node_id, _key(bob))

    assert sorted([(await inbox.next()).text for _ in range(3)]) == ["lost 1", "lost 2", "lost 3"]
    assert _syncs(cluster, transport) - syncs == 1
    assert transport.syncs == 0  # on the connection, not over HTTP
    assert transport.histories == histories

    with _pushes_lost(cluster, node, _key(bob)):
        for number in range(CATCH_UP_RECENT + 3):
            await alice.send_text(_key(bob)[0], f"many {number}")
    _publish_resync(cluster, node_id, _key(bob))
    assert [(await inbox.next()).text for _ in range(CATCH_UP_RECENT + 3)] == [
        f"many {number}" for number in range(CATCH_UP_RECENT + 3)
    ]
    assert transport.histories > histories
