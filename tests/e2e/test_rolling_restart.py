"""A rolling restart of every role under traffic: gateways, the API node and a NATS server, one after another.

Clients are the SDK's, as an application uses them: senders call ``send_text`` (retried with the same
``client_msg_id`` while a node is away), receivers follow ``events()`` (reconnecting to another gateway,
then syncing from their cursor). Each restart waits until every sender got more messages through before
the next; at the end every message a sender was told is stored is there once and reached its receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from im_sdk import AsyncClient
from im_server.api.server import ApiServer
from im_server.cluster.natsbin import free_port
from tests.e2e.conftest import stored_history
from tests.support.cluster import LoopThread, TestCluster
from tests.support.inbox import Inbox
from tests.support.nats import NatsCluster


class Pair:
    """A sender and its receiver; the sender sends one message at a time, each with its own id."""

    def __init__(self, sender: AsyncClient, receiver: AsyncClient, inbox: Inbox) -> None:
        self.sender = sender
        self.receiver = receiver
        self.inbox = inbox
        self.acked: list[str] = []
        self.progress = asyncio.Event()

    @property
    def to(self) -> int:
        assert self.receiver.session is not None
        return self.receiver.session.user.id

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            text = f"m{len(self.acked)}"
            await self.sender.send_text(self.to, text)  # stored once this returns
            self.acked.append(text)
            self.progress.set()

    async def more(self, count: int = 3, timeout: float = 60) -> None:
        """Wait until ``count`` more messages got through."""
        target = len(self.acked) + count
        async with asyncio.timeout(timeout):
            while len(self.acked) < target:
                self.progress.clear()
                await self.progress.wait()


@pytest.fixture
def servers(tmp_path) -> Any:
    cluster = NatsCluster(tmp_path / "nats").start()
    yield cluster
    cluster.close()


async def test_a_rolling_restart_of_every_role_loses_and_duplicates_nothing(
    servers: NatsCluster, cluster_loop: LoopThread, sqlite_url: str
):
    await servers.wait_for_jetstream()
    cluster = TestCluster(
        cluster_loop, servers, sqlite_url, nats_replicas=3, api_port=free_port(), **servers.settings("api", first=0)
    ).start(gateways=2)
    pairs: list[Pair] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for _ in range(3):
            sender, receiver = await cluster.user("sender"), await cluster.user("receiver")
            pairs.append(Pair(sender, receiver, Inbox(receiver)))
        tasks = [asyncio.create_task(pair.run(stop)) for pair in pairs]

        async def traffic_flows() -> None:
            for task in tasks:
                if task.done():
                    task.result()  # a sender that gave up: its error
            await asyncio.gather(*(pair.more() for pair in pairs))

        await traffic_flows()
        # Gateways, one at a time: the same node id comes back on a fresh port.
        for node_id in [node.node_id for node in cluster.gateways]:
            node = next(node for node in cluster.gateways if node.node_id == node_id)
            cluster.stop_gateway(node)
            await traffic_flows()
            cluster.add_gateway(node_id=node_id)
            await traffic_flows()
        # The API node: stopped (open requests finish), started again on the same address.
        assert cluster.api is not None
        cluster.loop.run(cluster.api.stop())
        cluster.api = ApiServer(cluster.settings)
        cluster.loop.run(cluster.api.start())
        await traffic_flows()
        # A NATS server: its clients move to the two others, the buckets keep two replicas of three.
        servers.stop(0, hard=False)  # the server the API node and the gateways are connected to
        await traffic_flows()
        servers.start(0)
        await traffic_flows()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

        total = 0
        for pair in pairs:
            assert pair.sender.session is not None
            conversation = "d:{}:{}".format(*sorted((pair.sender.session.user.id, pair.to)))
            messages = await stored_history(pair.receiver, conversation)
            stored = [str(getattr(message.content, "text", "")) for message in messages]
            assert stored == pair.acked  # nothing lost, nothing stored twice
            seen: set[int] = set()
            async with asyncio.timeout(30):
                while seen != set(range(1, len(stored) + 1)):
                    event = await pair.inbox.next(30)
                    assert event.seq not in seen and event.seq <= len(stored), event.seq
                    seen.add(event.seq)
            total += len(stored)
        print(f"rolling restart: {total} messages through 2 gateway, 1 API and 1 NATS restarts")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for pair in pairs:
            await pair.inbox.close()
            with contextlib.suppress(Exception):
                await pair.sender.aclose()
                await pair.receiver.aclose()
        cluster.stop()
