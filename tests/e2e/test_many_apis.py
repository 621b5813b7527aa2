"""`im server up --apis 2`: two API nodes sharing one port (SO_REUSEPORT) behind real gateways, on
PostgreSQL and on SQLite (WAL, ``BEGIN IMMEDIATE``, busy timeout). Sends go through both API nodes (the
trace says which stored each message); nothing is lost or duplicated and seqs stay contiguous."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from im_schema.admin import ClusterNodesRequest, TraceMessageRequest
from im_schema.content import TextContent
from im_schema.frames import SendFrame
from im_schema.groups import CreateGroupRequest
from im_sdk import AsyncClient
from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster
from im_server.cluster.natsbin import free_port, free_port_block
from im_server.services.admin import bootstrap_admin
from tests.conftest import PG_ADMIN_URL, PgDatabases
from tests.support.cluster import FAST, PASSWORD
from tests.support.faults import RawDevice, connect_device

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads load on Linux")

PER_DEVICE = 12


@pytest.fixture
def pg_url(pg_available: bool) -> Iterator[str]:
    """A fresh PostgreSQL database (skipped when PostgreSQL is not reachable)."""
    if not pg_available:
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    databases = PgDatabases()
    try:
        yield databases.create()
    finally:
        databases.drop_all()


async def _user(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, backoff=FAST)
    await client.register(name, PASSWORD)
    await client.login(name, PASSWORD, device="dev1")
    return client


async def _send_all(device: RawDevice, conversation: str, texts: list[str]) -> None:
    # One at a time: each send is its own request on the queue group, which either API node may take.
    for text in texts:
        key = secrets.token_hex(8)
        frame = SendFrame(conversation=conversation, client_msg_id=key, content=TextContent(text=text))
        await device.connection.send(frame.model_dump_json())
        await device.until(lambda d, key=key: key in d.acks)


async def _share_traffic(url: str, db_url: str, api_nodes: set[str], closing: list[object]) -> None:
    """Three users send into one group over WebSockets, one at a time each; then check every message
    arrived once, the seqs are contiguous, a retry is deduplicated, and both API nodes stored some."""
    suffix = secrets.token_hex(3)
    users = [await _user(url, f"{name}{suffix}") for name in ("alice", "bob", "carol")]
    closing.extend(users)
    root = users[0]
    await bootstrap_admin(db_url, root.session.user.username, None)
    # The node answering lists what its registry has heard: a node that just started is there after its
    # first heartbeat arrives, which a loaded machine may delay.
    async with asyncio.timeout(15):
        while True:
            nodes = (await root.request(ClusterNodesRequest())).nodes
            if {node.node_id for node in nodes if node.role == "api"} == api_nodes:
                break
            await asyncio.sleep(0.05)
    group = await root.request(CreateGroupRequest(name="shared", members=[user.session.user.id for user in users[1:]]))
    conversation = group.conversation
    start = (await root.history(conversation, limit=100)).messages[-1].seq
    devices = [await connect_device(user) for user in users]
    try:
        texts = {index: [f"u{index}-m{n}" for n in range(PER_DEVICE)] for index in range(len(users))}
        await asyncio.gather(*(_send_all(devices[i], conversation, texts[i]) for i in range(len(users))))
        last = start + PER_DEVICE * len(users)

        def has_all(device: RawDevice) -> bool:
            # Pushed by the others, acked to the sender itself.
            acked = {message["seq"] for answers in device.acks.values() for message in answers}
            return set(range(start + 1, last + 1)) <= device.seen.get(conversation, set()) | acked

        for device in devices:
            await device.until(has_all)
            assert device.duplicates == 0
        # A retry of a stored send, through a fresh connection (either API node): the same message. (It is
        # pushed once more if it reaches the node that did not store it: devices drop a seq they have.)
        first = next(iter(devices[0].acks.values()))[0]
        retry = AsyncClient(url, backoff=FAST)
        closing.append(retry)
        await retry.login(root.session.user.username, PASSWORD, device="dev1-rest")
        again = await retry.send_text(conversation, "u0-m0", client_msg_id=first["client_msg_id"])
        assert again.seq == first["seq"]
        page = await root.history(conversation, after=start, limit=500)
        seqs = [message.seq for message in page.messages]
        assert seqs == list(range(start + 1, last + 1))
        stored = sorted(message.content.text for message in page.messages)
        assert stored == sorted(text for batch in texts.values() for text in batch)
        stored_by = set()
        for seq in seqs:
            stored_by.add((await root.request(TraceMessageRequest(conversation=conversation, seq=seq))).stored_by)
        assert stored_by == api_nodes
    finally:
        for device in devices:
            await device.close()


async def test_two_api_nodes_share_one_port_and_the_traffic(make_cluster, db_url, closing):
    # In one process (fast): both nodes bind the same port with SO_REUSEPORT, as `--apis 2` does.
    port = free_port()
    cluster = make_cluster(gateways=1, db_url=db_url, api_port=port, api_reuse_port=True)
    second = cluster.add_api()
    assert second.url == cluster.url
    await _share_traffic(cluster.url, db_url, {cluster.api.node.node_id, second.node.node_id}, closing)


async def test_server_up_with_two_api_processes_on_postgresql(pg_url, tmp_path: Path, closing):
    # The real thing: `im server up --apis 2 --database-url postgresql://...` runs these processes.
    port = free_port_block(2)
    plan = ClusterPlan(
        data_dir=tmp_path / "data",
        api_port=port,
        gateways=1,
        apis=2,
        db_url=pg_url,
        subject_prefix="apis2",
        log_level="WARNING",
        extra_env={
            "IM_ARGON2_MEMORY_COST": "1024",
            "IM_ARGON2_TIME_COST": "1",
            "IM_REGISTER_RATE": "1000",
            "IM_REGISTER_BURST": "1000",
            "IM_DM_REQUIRES_FRIENDSHIP": "false",
            "IM_GROUP_INVITES_DEFAULT": "everyone",
        },
    )
    cluster = EmbeddedCluster(plan)  # its own nats-server: IM_NATS_* of the environment are not used
    try:
        await asyncio.to_thread(cluster.start)
        await _share_traffic(cluster.api_url, pg_url, {"api-1", "api-2"}, closing)
    finally:
        await asyncio.to_thread(cluster.stop)
