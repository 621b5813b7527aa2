"""End-to-end fixtures, and which tests run on both databases.

Tests whose rules live in SQL (groups, consent, people) and the core of delivery (messaging) run on
SQLite and on PostgreSQL. The transport tests of the modules in :data:`ONE_DATABASE` exercise frames,
connections, devices and limits, which do not depend on the database: they run on SQLite only (the
storage contract suite, tests/storage, runs every storage function on both). ``IM_TEST_ALL_DBS=1`` runs
them on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from im_schema import Message
from im_sdk import AsyncClient
from tests.support.cluster import LoopThread, TestCluster
from tests.support.inbox import Inbox
from tests.support.nats import PrivateNats

ONE_DATABASE = frozenset(
    {"test_bad_input.py", "test_devices.py", "test_lifecycle.py", "test_resume.py", "test_upload_limits.py"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("IM_TEST_ALL_DBS") == "1":
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        twice = "postgres" in (params.get("db_url"), params.get("shared_cluster"))
        (drop if twice and item.path.name in ONE_DATABASE else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="module")
def module_cluster(
    cluster_loop: LoopThread, nats_server: PrivateNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestCluster]:
    """One cluster (SQLite, two gateways) for a whole module, saving a start per test.

    A module opts in by defining its ``cluster`` or ``sqlite_cluster`` fixture as this one; only for
    tests that make users of their own and leave the nodes as they found them (nothing stopped, added
    or reconfigured).
    """
    path = tmp_path_factory.mktemp("module-cluster") / "im.db"
    cluster = TestCluster(cluster_loop, nats_server, f"sqlite+aiosqlite:///{path}").start(gateways=2)
    yield cluster
    cluster.stop()


@pytest.fixture
async def inboxes() -> AsyncIterator[Callable[..., Inbox]]:
    """``inbox(client)`` starts collecting a client's events; all are stopped after the test."""
    started: list[Inbox] = []

    def start(client: AsyncClient, **events_args: Any) -> Inbox:
        inbox = Inbox(client, **events_args)
        started.append(inbox)
        return inbox

    yield start
    for inbox in started:
        await inbox.close()


async def read_until_closed(ws: Any, timeout: float = 10) -> tuple[int | None, list[dict[str, Any]]]:
    """Every frame of a raw WebSocket until the server closes it, and its close code."""
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            async for data in ws:
                frames.append(json.loads(data))
    except ConnectionClosed:
        pass
    return ws.close_code, frames


async def wait_connected(cluster: TestCluster, client: AsyncClient, timeout: float = 10) -> str:
    """Wait until every API node routes to the client's device (messages committed from now on, through
    any of them, are pushed to it); returns the gateway node's id. The client may still be running its
    first sync."""
    assert client.session is not None
    user, device = client.session.user.id, client.session.device_id
    assert cluster.api is not None
    mirrors = [api.node.mirror for api in (cluster.api, *cluster.extra_apis)]

    def routed_to() -> str | None:
        node_ids = {mirror.routes.devices(user).get(device) for mirror in mirrors}
        if len(node_ids) != 1:
            return None
        [node_id] = node_ids
        connected = any(node.node_id == node_id and (user, device) in node.connections for node in cluster.gateways)
        return node_id if connected else None

    node_id: str = await cluster.until(routed_to, timeout)
    return node_id


async def stored_history(client: AsyncClient, conversation: str) -> list[Message]:
    """Every message of the conversation the client may see, page after page (a fault test on a fast
    machine acknowledges more than one page)."""
    messages: list[Message] = []
    after = 0
    while True:
        page = await client.history(conversation, after=after, limit=1000)
        messages += page.messages
        if not page.has_more or not page.messages:
            return messages
        after = page.messages[-1].seq
