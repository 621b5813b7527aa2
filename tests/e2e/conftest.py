from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from im_sdk import AsyncClient
from tests.support.cluster import TestCluster
from tests.support.inbox import Inbox


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


async def wait_connected(cluster: TestCluster, client: AsyncClient, timeout: float = 10) -> str:
    """Wait until the client's device holds a connection on some gateway; returns that node's id."""
    assert client.session is not None
    key = (client.session.user.id, client.session.device_id)

    async def find() -> str:
        async with asyncio.timeout(timeout):
            while True:
                for node in cluster.gateways:
                    if key in node.connections:
                        return node.node_id
                await asyncio.sleep(0.01)

    return await cluster.loop.call(find())
