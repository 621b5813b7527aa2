"""A NATS cluster of three servers with replicated buckets: one server stopped under traffic loses nothing.

The API node and one gateway are connected to server 0, the other gateway to server 1; clients on the two
gateways send to each other over WebSocket, server 0 is killed, and the nodes on it move to the servers
left (``IM_NATS_URL`` lists all three). Every acknowledged message must be stored once and reach its
receiver, and traffic must carry on, new devices included (their routes go into a bucket that has lost
one of its three replicas).

A receiver gets each message by push or by the sync a ``resync`` frame asks for; a push lost in the
failover without a ``resync`` is fetched as a client does when the next push shows a gap in seqs. Those
gaps are counted and printed (``-s``): they are the window described in docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError

from im_sdk import AsyncClient
from tests.e2e.conftest import stored_history
from tests.support.cluster import LoopThread, TestCluster
from tests.support.faults import RawDevice, text_frame
from tests.support.nats import NatsCluster


def _uid(client: AsyncClient) -> int:
    assert client.session is not None
    return client.session.user.id


def _direct(a: AsyncClient, b: AsyncClient) -> str:
    low, high = sorted((_uid(a), _uid(b)))
    return f"d:{low}:{high}"


def _port(node: Any) -> int:
    """The port of the NATS server a node is connected to."""
    url = node.bus.nc.connected_url
    assert url is not None
    return int(url.port)


class Sender:
    """Sends over one raw WebSocket, one message at a time, a refused or unanswered one again with the
    same ``client_msg_id`` (what the SDK does); records what was acknowledged."""

    def __init__(self, device: RawDevice, to: int) -> None:
        self.device = device
        self.to = to
        self.acked: list[str] = []
        self.retries = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            text = f"m{len(self.acked)}-{secrets.token_hex(3)}"
            key = secrets.token_hex(8)
            while True:
                errors = len(self.device.errors)
                await self.device.connection.send(text_frame(self.to, text, key))
                with contextlib.suppress(TimeoutError):
                    await self.device.until(lambda d, k=key, e=errors: k in d.acks or len(d.errors) > e, timeout=15)
                if key in self.device.acks:
                    break
                self.retries += 1
                await asyncio.sleep(0.1)
            self.acked.append(text)


async def _connect_retrying(client: AsyncClient, url: str) -> RawDevice:
    """Connect as a client does: a refusal asking to retry (a registry between leaders) is retried."""
    async with asyncio.timeout(30):
        while True:
            try:
                return await RawDevice.connect(client, url)
            except ConnectionClosedError as exc:
                if exc.rcvd is None or exc.rcvd.code != 1011:
                    raise
            await asyncio.sleep(0.2)


async def _settled(device: RawDevice, conversation: str, everything: set[int], quiet: float = 1.0) -> None:
    """Wait until the device has every seq of the conversation, or nothing has arrived for ``quiet``
    seconds (the senders have stopped: what is still missing was lost in the failover), at most 10 s."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while device.seen.get(conversation) != everything:
                device.changed.clear()
                if device.seen.get(conversation) != everything:
                    await asyncio.wait_for(device.changed.wait(), quiet)


@pytest.fixture
def servers(tmp_path) -> Any:
    cluster = NatsCluster(tmp_path / "nats").start()
    yield cluster
    cluster.close()


async def test_a_nats_server_stopped_in_a_cluster_of_three_loses_and_duplicates_nothing(
    servers: NatsCluster, cluster_loop: LoopThread, sqlite_url: str
):
    await servers.wait_for_jetstream()
    cluster = TestCluster(cluster_loop, servers, sqlite_url, nats_replicas=3, **servers.settings("api", first=0)).start(
        gateways=0
    )
    devices: list[RawDevice] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        gw_a = cluster.add_gateway(nats_url=servers.settings("gateway", first=0)["nats_url"])
        gw_b = cluster.add_gateway(nats_url=servers.settings("gateway", first=1)["nats_url"])
        assert cluster.api is not None
        api = cluster.api
        assert [_port(api.node), _port(gw_a), _port(gw_b)] == [servers.ports[0], servers.ports[0], servers.ports[1]]

        # Every bucket the nodes made is replicated on the three servers.
        observer = await servers.connect()
        try:
            js = observer.jetstream()
            for name in ("routes", "nodes", "revoked"):
                info = await js.stream_info(f"KV_{cluster.settings.subject_prefix}_{name}")
                assert info.config.num_replicas == 3, name
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2, name
        finally:
            await observer.close()

        # Pairs across the two gateways (so across two NATS servers), both ways.
        senders: list[Sender] = []
        receivers: list[tuple[AsyncClient, AsyncClient, RawDevice]] = []
        for index in range(4):
            home, away = (gw_a, gw_b) if index % 2 == 0 else (gw_b, gw_a)
            alice, bob = await cluster.user("alice"), await cluster.user("bob")
            sending = await RawDevice.connect(alice, home.url)
            receiving = await RawDevice.connect(bob, away.url)
            devices += [sending, receiving]
            senders.append(Sender(sending, _uid(bob)))
            receivers.append((alice, bob, receiving))
        tasks = [asyncio.create_task(sender.run(stop)) for sender in senders]

        # Traffic flows before the fault: every sender has some messages acknowledged.
        await cluster.until(lambda: all(len(sender.acked) >= 3 for sender in senders), 30)
        before_stop = sum(len(sender.acked) for sender in senders)
        servers.stop(0)  # SIGKILL: the API node and gateway A lose their server
        await cluster.until(lambda: api.node.bus.nc.is_connected and _port(api.node) != servers.ports[0], 30)
        await cluster.until(lambda: gw_a.bus.nc.is_connected and _port(gw_a) != servers.ports[0], 30)
        assert _port(gw_b) == servers.ports[1]  # never disturbed

        # Delivery carries on: every sender gets more acknowledged after the failover.
        after = [len(sender.acked) for sender in senders]
        for sender, count in zip(senders, after, strict=True):
            await sender.device.until(lambda d, s=sender, c=count: len(s.acked) >= c + 3, timeout=60)
        await cluster.until(lambda: sorted(cluster.live_gateways()) == sorted([gw_a.node_id, gw_b.node_id]), 30)
        # A device connecting now registers its route in a bucket with two replicas of three left.
        carol, dave = await cluster.user("carol"), await cluster.user("dave")
        late = await _connect_retrying(dave, gw_b.url)
        devices.append(late)
        await carol.send_text(_uid(dave), "after the failover")
        await carol.send_text(_uid(dave), "and again")
        # Pushed (a lost push is caught up on a later one, as the SDK does on a gap in seqs).
        await late.until(lambda d: bool(d.seen.get(_direct(carol, dave))), timeout=30)
        await late.catch_up()
        assert late.seen[_direct(carol, dave)] == {1, 2}
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

        # Nothing acknowledged lost, nothing stored twice, everything reached its receiver.
        total = gaps = 0
        for sender, (alice, bob, receiving) in zip(senders, receivers, strict=True):
            conversation = _direct(alice, bob)
            stored = [str(getattr(message.content, "text", "")) for message in await stored_history(bob, conversation)]
            assert stored == sender.acked
            everything = set(range(1, len(stored) + 1))
            # Pushed or resynced, else caught up from the first gap as a client does on its next push.
            await _settled(receiving, conversation, everything)
            gaps += len(everything - receiving.seen.get(conversation, set()))
            await receiving.catch_up()
            assert receiving.seen.get(conversation) == everything
            assert all(len(acks) == 1 for acks in sender.device.acks.values())
            total += len(stored)
        retries = sum(sender.retries for sender in senders)
        print(f"nats cluster: {total} messages ({before_stop} before the stop), {retries} sends repeated, {gaps} gaps")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for device in devices:
            await device.close()
        cluster.stop()
