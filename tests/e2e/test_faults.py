"""Faults injected into a real cluster: the cluster heals by itself, nothing acked is lost or duplicated.

Real processes are killed with SIGKILL; NATS is a private nats-server of the test's own where it is
stopped. Timings are recorded but never asserted; what is asserted is the outcome (who is assigned,
which routes exist, what each device has) and the mechanism (how many attempts a send needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from im_schema.limits import CLOSE_TOO_SLOW
from im_schema.rest import GatewayRequest
from im_sdk import AsyncClient
from im_server.api.node import ApiNode
from im_server.services import delivery
from tests.e2e.conftest import stored_history
from tests.support.cluster import TestCluster
from tests.support.faults import RawDevice, kill, spawn_api_process, text_frame
from tests.support.inbox import Inbox
from tests.support.nats import PrivateNats

pytestmark = pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX system")


def _direct(a: AsyncClient, b: AsyncClient) -> str:
    assert a.session is not None and b.session is not None
    low, high = sorted((a.session.user.id, b.session.user.id))
    return f"d:{low}:{high}"


def _text(message: Any) -> str:
    return str(getattr(message.content, "text", ""))


def _uid(client: AsyncClient) -> int:
    assert client.session is not None
    return client.session.user.id


def _held_back(method: Callable[..., Awaitable[None]], release: asyncio.Event) -> Callable[..., Awaitable[None]]:
    """``method`` of a node (it runs on the cluster's loop), made to wait until ``release``, an event of
    the test's loop, is set."""
    test_loop = asyncio.get_running_loop()

    async def held(*args: Any) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(release.wait(), test_loop))
        await method(*args)

    return held


class _CountingTransport(httpx.AsyncHTTPTransport):
    """A real HTTP transport that counts the gateway assignments asked for (``GET /v1/gateway``)."""

    def __init__(self) -> None:
        super().__init__()
        self.assignments = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/gateway":
            self.assignments += 1
        return await super().handle_async_request(request)


# NATS stopped and started again ---------------------------------------------------------------------


async def test_messages_committed_while_nats_is_down_reach_connected_devices(cluster_loop, sqlite_url, tmp_path):
    nats_dir = tmp_path / "nats"
    nats = PrivateNats(nats_dir).start()
    cluster = TestCluster(cluster_loop, nats, sqlite_url).start(gateways=1)
    api = cluster.api
    assert api is not None
    devices: list[RawDevice] = []
    try:
        alice, bob = await cluster.user("alice"), await cluster.user("bob")
        device = await RawDevice.connect(bob)
        devices.append(device)
        conversation = _direct(alice, bob)
        await alice.send_text(_uid(bob), "before")
        await device.until(lambda d: d.seen.get(conversation) == {1})

        assert nats.process is not None
        kill(nats.process)
        await cluster.until(lambda: not api.node.bus.nc.is_connected and not cluster.gateways[0].bus.nc.is_connected)
        gateway_health = cluster.gateways[0].url.replace("ws://", "http://").replace("/ws", "/healthz")
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{cluster.url}/healthz")
            assert health.status_code == 503 and "nats" in health.json()["degraded"]
            health = await http.get(gateway_health)
            assert health.status_code == 503 and "nats" in health.json()["degraded"]
        # Committed while the bus is away: stored (acked), pushes cannot reach the gateway.
        for index in range(5):
            await alice.send_text(_uid(bob), f"during {index}")

        nats.start()  # the same port, store and users
        # No new traffic from here on: every committed message must still reach the connected device.
        await device.until(lambda d: d.seen.get(conversation) == set(range(1, 7)), timeout=30)
        # Pushes buffered by the API may arrive first; the gateway's resync after its reconnect always comes.
        await device.until(lambda d: d.resyncs >= 1)
        assert device.close_code is None  # healed on the same connection

        # The views healed at once: the gateway is assigned again without waiting for missed heartbeats.
        await cluster.until(lambda: api.node.mirror.current and api.node.mirror.reloads >= 1)
        await cluster.until(lambda: cluster.live_gateways() == [cluster.gateways[0].node_id])
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{cluster.url}/healthz")).status_code == 200
            for _ in range(200):  # the gateway is healthy again once its next heartbeat landed
                if (await http.get(gateway_health)).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get(gateway_health)).status_code == 200
        page = await bob.history(conversation, after=0)
        texts = [_text(message) for message in page.messages]
        assert texts == ["before", *(f"during {index}" for index in range(5))]  # stored once each
    finally:
        for device in devices:
            await device.close()
        cluster.stop()
        nats.close()


async def test_after_nats_returns_each_device_is_told_to_resync_once(cluster_loop, sqlite_url, tmp_path, monkeypatch):
    # Both the API (pushes it published while NATS was away may have been flushed before the gateways
    # subscribed again) and each gateway (pushes meant for it may have been lost) want the devices to
    # resync: the gateway tells every client, then says so, and the API drops what it owed them.
    monkeypatch.setattr(delivery, "RECOVERY_WAIT", 60.0)  # the API's own resyncs only if no gateway says so
    nats = PrivateNats(tmp_path / "nats").start()
    cluster = TestCluster(cluster_loop, nats, sqlite_url).start(gateways=2)
    assert cluster.api is not None
    api = cluster.api.node
    devices: list[RawDevice] = []
    try:
        alice = await cluster.user("alice")
        users = [await cluster.user(f"user{index}") for index in range(4)]
        conversations = [_direct(alice, user) for user in users]
        for user in users:
            devices.append(await RawDevice.connect(user))
            await alice.send_text(_uid(user), "before")
        for conversation, device in zip(conversations, devices, strict=True):
            await device.until(lambda d, c=conversation: d.seen.get(c) == {1})
        assert {device.resyncs for device in devices} == {0}

        assert nats.process is not None
        kill(nats.process)
        await cluster.until(
            lambda: not api.bus.nc.is_connected and not any(node.bus.nc.is_connected for node in cluster.gateways)
        )
        for user in users:
            for index in range(3):
                await alice.send_text(_uid(user), f"during {index}")
        nats.start()

        for conversation, device in zip(conversations, devices, strict=True):  # every committed message arrives
            await device.until(lambda d, c=conversation: d.seen.get(c) == {1, 2, 3, 4}, timeout=30)
            # ... pushed too: the API held them until the gateway was back on the bus (flushed earlier, NATS
            # would have dropped them, and the device would have had to wait for its resync to fetch them).
            await device.until(lambda d: d.pushed == 4)
        # Once every gateway has resynced its clients and the API owes nothing, no resync is on its way.
        await cluster.until(
            lambda: (
                api.deliverer.owed == 0
                and all(node._recovering is not None and node._recovering.done() for node in cluster.gateways)
            ),
            timeout=30,
        )
        assert api.deliverer.resyncs == 0 and api.deliverer.settled == len(devices)
        assert [node.metrics.value("im_gateway_resyncs_total") for node in cluster.gateways] == [1, 1]
        for device in devices:
            await device.until(lambda d: d.resyncs >= 1)
        assert [device.resyncs for device in devices] == [1] * len(devices)
        assert all(device.close_code is None for device in devices)
    finally:
        for device in devices:
            await device.close()
        cluster.stop()
        nats.close()


@pytest.mark.parametrize(
    ("handler", "frame", "answered"),
    [
        (
            "_on_send",
            {"type": "send", "client_msg_id": "lost-with-the-link", "content": {"kind": "text", "text": "hi"}},
            lambda frame: frame.get("client_msg_id") == "lost-with-the-link",
        ),
        (
            "_on_sync",
            {"type": "sync", "id": "lost-with-the-link"},
            lambda frame: frame.get("id") == "lost-with-the-link",
        ),
    ],
)
async def test_a_request_lost_with_the_nats_link_is_asked_again_as_soon_as_it_is_back(
    cluster_loop, sqlite_url, tmp_path, monkeypatch, handler, frame, answered
):
    # The API node never sees the first copy of the batch (dropped by a hook, as when it was still in a
    # socket buffer as the link died); each attempt would wait two minutes for its answer. The gateway
    # asks again once NATS is back rather than after that timeout: for sends as for syncs.
    test_loop = asyncio.get_running_loop()
    dropped = asyncio.Event()
    original = getattr(ApiNode, handler)

    async def drop_the_first(self: ApiNode, msg: Any) -> None:
        if b"lost-with-the-link" in msg.data and not dropped.is_set():
            test_loop.call_soon_threadsafe(dropped.set)
            return
        await original(self, msg)

    monkeypatch.setattr(ApiNode, handler, drop_the_first)
    nats = PrivateNats(tmp_path / "nats").start()
    settings = {"gateway_forward_timeout": 120.0, "gateway_sync_timeout": 120.0, "gateway_forward_deadline": 300.0}
    cluster = TestCluster(cluster_loop, nats, sqlite_url, **settings).start(gateways=1)
    gateway = cluster.gateways[0]
    try:
        alice, bob = await cluster.user("alice"), await cluster.user("bob")
        url = (await alice.request(GatewayRequest())).url
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(json.dumps({**frame, "to": _uid(bob)} if frame["type"] == "send" else frame))
            async with asyncio.timeout(10):
                await dropped.wait()
            assert nats.process is not None
            kill(nats.process)
            await cluster.until(lambda: not gateway.bus.nc.is_connected)
            nats.start()
            async with asyncio.timeout(30):
                while not answered(answer := json.loads(await ws.recv())):
                    pass
        assert answer["type"] in ("ack", "sync"), answer
    finally:
        cluster.stop()
        nats.close()


# A gateway wrongly judged dead -----------------------------------------------------------------------------


async def test_a_gateway_judged_dead_by_mistake_puts_its_routes_back_and_its_clients_resync(make_cluster):
    cluster = make_cluster(gateways=1, heartbeat_interval=0.5, node_ttl=1.5)
    api, gateway = cluster.api.node, cluster.gateways[0]
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    device = await RawDevice.connect(bob)
    conversation = _direct(alice, bob)
    heartbeat = gateway._heartbeat
    assert heartbeat is not None and heartbeat._task is not None

    async def silence() -> None:  # an event loop stall, as the others see it: no heartbeats for a while
        heartbeat._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat._task

    try:
        await cluster.loop.call(silence())
        # Judged dead (a probe finds it subscribed, so only the TTL decides): its routes are removed.
        await cluster.until(lambda: not api.mirror.routes.devices(_uid(bob)))
        await alice.send_text(_uid(bob), "while judged dead")  # bob looks offline: no push
        await cluster.loop.call(heartbeat.start())  # the first heartbeat after the gap
        await device.until(lambda d: d.seen.get(conversation) == {1})
        assert device.resyncs >= 1 and device.close_code is None
        await cluster.until(lambda: api.mirror.routes.devices(_uid(bob)).get("dev1") == gateway.node_id)
        await alice.send_text(_uid(bob), "pushed again")
        await device.until(lambda d: d.seen.get(conversation) == {1, 2})
    finally:
        await device.close()


# A client that stops reading --------------------------------------------------------------------------


async def test_a_client_that_stops_reading_is_closed_with_4013_and_catches_up(make_cluster):
    budget = 64 * 1024
    cluster = make_cluster(gateways=1, gateway_outbound_budget=budget, max_text_len=16_000)
    gateway = cluster.gateways[0]
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    slow = await RawDevice.connect(bob, read=False)
    transport = slow.connection.transport
    with contextlib.suppress(OSError):
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport.pause_reading()
    key = (_uid(bob), "dev1")

    async def small_send_buffer() -> None:
        # Small kernel buffers on both ends, so that a few frames fill them and the gateway's own grows.
        server = gateway.connections[key].transport.get_extra_info("socket")
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    await cluster.loop.call(small_send_buffer())
    text = "x" * 15_000
    sent = 0
    peak = 0
    try:
        while gateway.metrics.value("im_gateway_too_slow_closes_total") == 0:
            assert sent < 2_000, "the slow client was never closed"
            await asyncio.gather(*(alice.send_text(_uid(bob), text) for _ in range(5)))
            sent += 5
            peak = max(peak, await cluster.loop.call(_outbound(gateway)))
        # Memory stayed bounded: never more than the budget and one frame waiting for this client.
        assert peak <= budget + 16 * 1024
        transport.resume_reading()
        slow.start_reading()
        await slow.until(lambda d: d.close_code is not None)
        assert slow.close_code == CLOSE_TOO_SLOW
        assert slow.pushed < sent  # it was cut off, not served

        # Catching up by sync: the reconnected device gets everything that was stored.
        again = await RawDevice.connect(bob)
        await again.catch_up()
        assert again.seen[_direct(alice, bob)] == set(range(1, sent + 1))
        await again.close()
    finally:
        await slow.close()


async def _outbound(gateway: Any) -> int:
    return int(gateway._outbound_bytes())


# A gateway killed --------------------------------------------------------------------------------------


async def test_a_killed_gateway_is_unassigned_its_routes_removed_and_its_clients_catch_up(make_cluster):
    cluster = make_cluster(gateways=1, heartbeat_interval=0.5, node_ttl=1.5)
    api = cluster.api.node
    survivor = cluster.gateways[0].node_id
    process, _ = cluster.spawn_gateway_process("gw-doomed")
    sender = await cluster.user("sender")
    clients: list[AsyncClient] = []
    transports: list[_CountingTransport] = []
    inboxes: list[Inbox] = []
    try:
        # Enough clients that some are assigned to the doomed node (rendezvous hashing spreads them).
        while sum(1 for c in clients if api.assign_gateway(_uid(c), "dev1").node_id == "gw-doomed") < 3:
            assert len(clients) < 40
            transports.append(_CountingTransport())
            clients.append(await cluster.user("member", transport=transports[-1]))
        inboxes = [Inbox(client) for client in clients]
        for client in clients:
            await sender.send_text(_uid(client), "hello")
        for inbox in inboxes:
            await inbox.until_text("hello")
        doomed = [c for c in clients if api.mirror.routes.devices(_uid(c)).get("dev1") == "gw-doomed"]
        assert doomed
        assignments = [transport.assignments for transport in transports]

        killed_at = time.monotonic()
        kill(process)
        # Messages committed while the doomed clients are away.
        for client in clients:
            await sender.send_text(_uid(client), "while away")
        await cluster.until(lambda: "gw-doomed" not in cluster.live_gateways())
        unassigned_after = time.monotonic() - killed_at
        assert all(api.assign_gateway(_uid(c), "dev1").node_id == survivor for c in clients)
        await cluster.until(lambda: not api.mirror.routes.on_node("gw-doomed"))
        routes_gone_after = time.monotonic() - killed_at
        # Every client is back (on the survivor) and has everything, once.
        await cluster.until(
            lambda: all(api.mirror.routes.devices(_uid(c)).get("dev1") == survivor for c in clients), timeout=30
        )
        for client in clients:
            await sender.send_text(_uid(client), "after")
        for inbox in inboxes:
            seen = await inbox.until_text("after", timeout=30)
            texts = [event.text for event in seen]
            assert texts.count("while away") == 1 and texts.count("after") == 1
        # The clients of the dead gateway went to the next gateway of their assignment without asking
        # the API for another (when a gateway dies, its clients all come back at once).
        assert [transport.assignments for transport in transports] == assignments
        print(f"gateway kill: unassigned after {unassigned_after:.2f}s, routes gone after {routes_gone_after:.2f}s")
    finally:
        for inbox in inboxes:
            await inbox.close()
        for client in clients:
            await client.aclose()
        await sender.aclose()


# An API node killed under load ----------------------------------------------------------------------------


async def test_a_killed_api_node_loses_and_duplicates_nothing_and_stalls_no_sender(make_cluster):
    cluster = make_cluster(gateways=1, gateway_forward_timeout=0.5)
    gateway = cluster.gateways[0]
    process, doomed_url = spawn_api_process(cluster.env(), "api-doomed")
    await cluster.until(lambda: "api-doomed" in [info.node_id for info in cluster.api.node.mirror.nodes.live("api")])
    receiver = await cluster.user("receiver")
    ws_senders = [await cluster.user("ws") for _ in range(4)]
    http_senders = [await cluster.user("http") for _ in range(4)]
    devices = [await RawDevice.connect(client) for client in ws_senders]
    stop = asyncio.Event()
    sent: dict[str, str] = {}
    longest: list[float] = []

    async def ws_sender(device: RawDevice, index: int) -> None:
        count = 0
        while not stop.is_set():
            key = f"w{index}-{count}-{secrets.token_hex(3)}"
            sent[key] = f"ws {index} {count}"
            started = time.monotonic()
            await device.connection.send(text_frame(_uid(receiver), sent[key], key))
            await device.until(lambda d, key=key: key in d.acks or any(e.get("client_msg_id") == key for e in d.errors))
            longest.append(time.monotonic() - started)
            count += 1

    async def http_sender(client: AsyncClient, index: int) -> None:
        # A load balancer's view: one node goes away, the same request (same client_msg_id) goes to another.
        token = client._state.access_token
        urls = [doomed_url, cluster.url]
        count = 0
        async with httpx.AsyncClient(timeout=5) as http:
            while not stop.is_set():
                key = f"h{index}-{count}-{secrets.token_hex(3)}"
                sent[key] = f"http {index} {count}"
                body = {"to": _uid(receiver), "client_msg_id": key, "content": {"kind": "text", "text": sent[key]}}
                for attempt in range(20):
                    url = urls[0] if process.poll() is None and attempt == 0 else cluster.url
                    try:
                        answer = await http.post(
                            f"{url}/v1/messages", json=body, headers={"Authorization": f"Bearer {token}"}
                        )
                    except httpx.TransportError:
                        continue
                    if answer.status_code < 500:
                        assert answer.status_code in (200, 201), answer.text
                        break
                else:
                    raise AssertionError(f"{key} never stored")
                urls.reverse()
                count += 1

    tasks = [asyncio.create_task(ws_sender(d, i)) for i, d in enumerate(devices)]
    tasks += [asyncio.create_task(http_sender(c, i)) for i, c in enumerate(http_senders)]
    try:
        await asyncio.sleep(0.3)  # let sends flow through both nodes before one dies
        kill(process)
        await cluster.until(lambda: "api-doomed" not in [i.node_id for i in cluster.api.node.mirror.nodes.live("api")])
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
        for device in devices:
            assert device.errors == []
            assert all(len(acks) == 1 for acks in device.acks.values())
        # Nothing lost, nothing stored twice.
        conversations = {_direct(receiver, client) for client in [*ws_senders, *http_senders]}
        stored: list[str] = []
        for conversation in conversations:
            stored += [_text(message) for message in await stored_history(receiver, conversation)]
        assert sorted(stored) == sorted(sent.values())
        # No sender waited on the dead node for more than one short attempt.
        assert gateway._forward_attempts_max <= 2
        print(f"api kill: {len(sent)} sends, longest websocket send {max(longest):.2f}s")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for device in devices:
            await device.close()
        kill(process)


async def test_a_send_stored_by_a_node_that_died_before_publishing_reaches_the_device_on_retry(make_cluster):
    # The window of a kill between commit and publish, held open by a hook instead of timed: node A stores
    # the send and never gets further (no ack, no push); the sender retries on node B with the same
    # client_msg_id, which finds the message stored and must push it, or the device waits for a sync.
    cluster = make_cluster(gateways=1)
    dying = cluster.api.node
    other = cluster.add_api()
    await cluster.until(lambda: len(dying.mirror.nodes.live("api")) == 2)
    sender, receiver = await cluster.user("sender"), await cluster.user("receiver")
    for attempt in range(20):  # a loaded machine may delay a heartbeat past the TTL: ask again
        await cluster.until(lambda: len(dying.mirror.nodes.live("gateway")) == 1)
        try:
            device = await RawDevice.connect(receiver)
            break
        except httpx.HTTPStatusError:
            if attempt == 19:
                raise
    stored, release = asyncio.Event(), asyncio.Event()
    write_batch = dying.messages.write_batch

    async def store_then_die(items: Any, *, now: int) -> Any:
        await write_batch(items, now=now)
        test_loop.call_soon_threadsafe(stored.set)  # the test runs in another thread's loop
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(release.wait(), test_loop))
        raise ConnectionError("the node died")

    test_loop = asyncio.get_running_loop()
    dying.messages.write_batch = store_then_die  # type: ignore[method-assign]
    body = {"to": _uid(receiver), "client_msg_id": "retried-after-a-death", "content": {"kind": "text", "text": "hi"}}
    headers = {"Authorization": f"Bearer {sender._state.access_token}"}
    try:
        async with httpx.AsyncClient() as http:
            first = asyncio.create_task(http.post(f"{cluster.url}/v1/messages", json=body, headers=headers))
            await stored.wait()
            assert not first.done()
            answer = await http.post(f"{other.url}/v1/messages", json=body, headers=headers)
            assert answer.status_code in (200, 201), answer.text
            seq = answer.json()["seq"]
            conversation = _direct(sender, receiver)
            await device.until(lambda d: seq in d.seen.get(conversation, set()))
            assert device.pushed == 1  # pushed (a resync may come too on a loaded machine, and find it stored)
            release.set()
            with contextlib.suppress(httpx.HTTPError):
                await first
    finally:
        release.set()
        dying.messages.write_batch = write_batch  # type: ignore[method-assign]
        await device.close()


# A full disk -----------------------------------------------------------------------------------------------


async def _retrying(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    # A kept-alive connection closed by the server just as it is reused: what a client retries (sends
    # with the same client_msg_id, so a retry never stores twice).
    for attempt in range(3):
        try:
            return await http.request(method, url, **kwargs)
        except httpx.TransportError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _fill(path: Path, leave: int) -> None:
    # Unbuffered: a buffered file would try to flush its last block again on close, and fail there.
    with open(path, "wb", buffering=0) as output, contextlib.suppress(OSError):
        while True:
            output.write(b"\0" * 16 * 1024)
    os.truncate(path, max(0, path.stat().st_size - leave))


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 16 MiB tmpfs, when this machine lets the tests mount one (root, or a user namespace)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


async def test_a_full_disk_is_a_clear_error_nothing_acked_is_lost_and_healthz_is_degraded(make_cluster, small_disk):
    cluster = make_cluster(gateways=1, db_url=f"sqlite+aiosqlite:///{small_disk / 'im.db'}")
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    await alice.send_text(_uid(bob), "before the disk filled")  # the conversation exists
    # Fill the disk with a file, leaving a little room.
    filler = small_disk / "filler"
    _fill(filler, leave=48 * 1024)
    acked: list[str] = ["before the disk filled"]
    refused: list[dict[str, Any]] = []
    token = alice._state.access_token
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        for index in range(400):
            text = f"message {index} " + "y" * 2000
            body = {"to": _uid(bob), "client_msg_id": f"full-disk-{index}", "content": {"kind": "text", "text": text}}
            answer = await _retrying(
                http, "POST", "/v1/messages", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if answer.status_code in (200, 201):
                acked.append(text)
            else:
                assert answer.status_code == 503, answer.text
                refused.append(answer.json()["error"])
                break
        assert refused, "the disk never filled"
        assert refused[0]["code"] == "storage_full"
        health = await _retrying(http, "GET", "/healthz")
        assert health.status_code == 503 and "database" in health.json()["degraded"]

        # Room again: healthz notices without a send, and what was acked is all there, once.
        filler.unlink()
        await cluster.until(lambda: True)
        for _ in range(100):
            if (await _retrying(http, "GET", "/healthz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await _retrying(http, "GET", "/healthz")).status_code == 200
    page = await bob.history(_direct(alice, bob), after=0, limit=1000)
    assert [_text(message) for message in page.messages] == acked


async def test_a_device_that_names_the_gateway_it_lost_is_assigned_another(make_cluster):
    # What a reconnecting client does: a gateway killed a moment ago is still live in the registry (its
    # heartbeat has not been missed yet), so the client names it and goes elsewhere at its first attempt.
    cluster = make_cluster(gateways=2)
    client = await cluster.user("roamer")
    headers = {"Authorization": f"Bearer {client._state.access_token}"}
    try:
        async with httpx.AsyncClient(base_url=cluster.url, headers=headers) as http:

            async def assign(**params: str) -> dict[str, str]:
                # Asked while every gateway is live (a loaded machine may delay a heartbeat past the TTL).
                while True:
                    count = len(cluster.gateways)
                    await cluster.until(lambda count=count: len(cluster.live_gateways()) == count)
                    answer = await http.get("/v1/gateway", params=params)
                    if answer.status_code != 503:
                        answer.raise_for_status()
                        return dict(answer.json())

            first = await assign()
            other = await assign(avoid=first["node_id"])
            assert other["node_id"] != first["node_id"]
            assert other["node_id"] in {node.node_id for node in cluster.gateways}
            # The assignment names the other gateway too, where the device goes if it loses the first
            # (without asking again); the gateway avoided is in no list.
            assert first["alternates"] == [{"node_id": other["node_id"], "url": other["url"]}]
            assert other["alternates"] == []
            # A name that is not a live gateway changes nothing; hostile names are refused.
            assert await assign(avoid="gw-unknown") == first
            for bad in ("", "../gw-1", "x" * 65, "gw 1"):
                answer = await http.get("/v1/gateway", params={"avoid": bad})
                assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request", bad
            # The only gateway left is assigned even to a device that names it.
            cluster.stop_gateway(next(node for node in cluster.gateways if node.node_id == other["node_id"]))
            await cluster.until(lambda: other["node_id"] not in cluster.live_gateways())
            assert await assign(avoid=first["node_id"]) == {**first, "alternates": []}
    finally:
        await client.aclose()


async def test_a_device_told_ready_before_every_api_node_routed_to_it_resyncs_once_they_do(make_cluster):
    # The route barrier timed out (an API node too busy to answer in time), so the device synced before
    # that node could push to it: once the node answers, the gateway tells the device to sync again.
    cluster = make_cluster(gateways=1)
    api = cluster.api.node
    answer_barrier = api._answer_barrier
    release = asyncio.Event()
    late = _held_back(answer_barrier, release)

    bob = await cluster.user("bob")
    api._answer_barrier = late  # type: ignore[method-assign]
    device: RawDevice | None = None
    try:
        device = await RawDevice.connect(bob)  # ready comes after the barrier's timeout
        assert device.resyncs == 0
        release.set()  # the node answers again: the next round completes
        await device.until(lambda d: d.resyncs == 1)
    finally:
        release.set()
        api._answer_barrier = answer_barrier  # type: ignore[method-assign]
        if device is not None:
            await device.close()


async def test_an_api_node_whose_routes_lag_does_not_answer_the_barrier_and_the_device_resyncs_once_they_catch_up(
    make_cluster,
):
    # An API node that has not applied a device's route within its wait gives no answer: an answer would
    # tell the gateway that pushes reach the device from now on, and the device would never sync again.
    cluster = make_cluster(gateways=1)
    api = cluster.api.node
    gateway = cluster.gateways[0]
    wait_for_routes = api.mirror.wait_for_routes
    release = asyncio.Event()
    lagging = _held_back(wait_for_routes, release)

    bob = await cluster.user("bob")
    gateway.barrier._timeout = 3.0  # longer than the API node's own wait (2 s): a false answer would count
    api.mirror.wait_for_routes = lagging  # type: ignore[method-assign]
    device: RawDevice | None = None
    try:
        device = await RawDevice.connect(bob)  # ready after the round timed out, unanswered
        assert device.resyncs == 0
        release.set()  # the node's routes catch up: the next round is answered, and the device told
        await device.until(lambda d: d.resyncs == 1)
    finally:
        release.set()
        api.mirror.wait_for_routes = wait_for_routes  # type: ignore[method-assign]
        gateway.barrier._timeout = 2.0
        if device is not None:
            await device.close()


async def test_a_gateway_that_sees_no_api_node_still_waits_for_one_to_route_a_device(make_cluster):
    # The gateway's node view may be the one behind (the node registry between leaders): it still asks
    # the route barrier and waits for an answer, rather than telling the device "ready, nothing missed"
    # while an API node that does not route to it yet is up.
    cluster = make_cluster(gateways=1)
    api = cluster.api.node
    gateway = cluster.gateways[0]
    wait_for_routes = api.mirror.wait_for_routes
    live = gateway.barrier._nodes.live
    release = asyncio.Event()
    lagging = _held_back(wait_for_routes, release)

    bob = await cluster.user("bob")
    gateway.barrier._nodes.live = lambda role=None: [] if role == "api" else live(role)  # type: ignore[method-assign]
    api.mirror.wait_for_routes = lagging  # type: ignore[method-assign]
    device: RawDevice | None = None
    try:
        rounds = gateway.barrier.rounds
        device = await RawDevice.connect(bob)  # ready after an unanswered round
        assert gateway.barrier.rounds > rounds and device.resyncs == 0
        release.set()
        await device.until(lambda d: d.resyncs == 1)
    finally:
        release.set()
        api.mirror.wait_for_routes = wait_for_routes  # type: ignore[method-assign]
        gateway.barrier._nodes.live = live  # type: ignore[method-assign]
        if device is not None:
            await device.close()


@pytest.mark.parametrize("watcher", ["nodes", "routes"])
async def test_a_registry_view_that_stops_following_is_noticed_and_followed_again(make_cluster, watcher):
    # JetStream may stop feeding a watcher while the connection stays up (seen after a NATS server of a
    # cluster died). The API node notices: its own heartbeats no longer show in its nodes view, or a
    # gateway's route barrier asks for a revision its routes view does not move towards. It follows the
    # registry again, and the device that connected meanwhile is routed to.
    cluster = make_cluster(gateways=1)
    api = cluster.api.node
    mirror = api.mirror
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    inbox: Inbox | None = None
    try:

        async def stall() -> None:
            index = 0 if watcher == "nodes" else 1  # in the order RegistryMirror._load makes them
            await mirror._watchers[index]._sub.unsubscribe()  # it waits for entries that never come

        reloads, reaped = mirror.reloads, api.reaper.reaped
        await cluster.loop.call(stall())
        inbox = Inbox(bob)  # its route is put while the view stands still
        await cluster.until(lambda: mirror.stalls == 1 and mirror.reloads == reloads + 1, timeout=20)
        await cluster.until(lambda: api.mirror.routes.devices(_uid(bob)).get("dev1") is not None)
        await alice.send_text(_uid(bob), "after the stall")
        await inbox.until_text("after the stall")
        assert mirror.stalls == 1
        # Nobody was judged dead on the stale view (node ages stood still while it was in doubt).
        assert api.reaper.reaped == reaped
    finally:
        if inbox is not None:
            await inbox.close()
        await alice.aclose()
        await bob.aclose()


async def test_nothing_reaches_a_device_before_ready_and_its_catch_up_finds_what_was_held_back(make_cluster):
    # Between registering a device's route and telling it ``ready`` (while the route barrier waits for
    # the API nodes), a message for it reaches the gateway. A client reads ``ready`` first (the SDK takes
    # anything else for a failed handshake and reconnects), so the push is not written; the catch-up the
    # client runs after ``ready`` finds the message.
    cluster = make_cluster(gateways=1)
    api = cluster.api.node
    answer_barrier = api._answer_barrier
    release = asyncio.Event()
    late = _held_back(answer_barrier, release)

    alice, bob, carol = await cluster.user("alice"), await cluster.user("bob"), await cluster.user("carol")
    witness = Inbox(carol)
    token = bob._state.access_token
    assert token is not None
    ws: Any = None
    try:
        await alice.send_text(_uid(carol), "carol is here")
        await witness.until_text("carol is here")
        api._answer_barrier = late  # type: ignore[method-assign]
        ws = await websockets.connect(cluster.gateways[0].url, max_size=None, compression=None)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        await cluster.until(lambda: api.mirror.routes.devices(_uid(bob)).get("dev1") is not None)
        await alice.send_text(_uid(bob), "before ready")
        # Pushes leave the API in commit order on the gateway's subject: once carol has the next one, the
        # gateway has handled bob's.
        await alice.send_text(_uid(carol), "after it")
        await witness.until_text("after it")
        release.set()
        first = json.loads(await ws.recv())
        assert first["type"] == "ready", first
        await ws.send(json.dumps({"type": "sync", "id": "s1", "recent": 20}))
        async with asyncio.timeout(10):
            while (frame := json.loads(await ws.recv())).get("id") != "s1":
                pass
        texts = [m["content"]["text"] for c in frame["page"]["conversations"] for m in c["recent"]]
        assert texts == ["before ready"]
    finally:
        release.set()
        api._answer_barrier = answer_barrier  # type: ignore[method-assign]
        if ws is not None:
            await ws.close()
        await witness.close()
        for client in (alice, bob, carol):
            await client.aclose()
