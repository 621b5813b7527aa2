"""A client with a state file, restarted: it resumes exactly where it stopped, against a real cluster."""

from __future__ import annotations

import httpx
import pytest

from im_sdk import AsyncClient, Client
from tests.e2e.conftest import wait_connected
from tests.support.cluster import FAST, TestCluster


@pytest.fixture
def cluster(module_cluster: TestCluster) -> TestCluster:
    """The module's shared cluster (see ``module_cluster``): these tests make users of their own and
    leave the nodes as they found them."""
    return module_cluster


class Recording(httpx.AsyncHTTPTransport):
    """A real transport that remembers the catch-up requests made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[str, dict[str, str]]] = []
        self.conversations: list[dict[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/messages"):
            self.history.append((request.url.path.split("/")[3], dict(request.url.params)))
        elif request.method == "GET" and request.url.path.endswith("/conversations"):
            self.conversations.append(dict(request.url.params))
        return await super().handle_async_request(request)


def _resumed(client: AsyncClient, state, transport: httpx.AsyncBaseTransport | None = None) -> AsyncClient:
    """Another process of the same device: the same tokens and state file, nothing in memory."""
    session = client.session
    assert session is not None
    return AsyncClient(
        client.server_url,
        access_token=session.access_token,
        refresh_token=session.refresh_token,
        state_path=state,
        backoff=FAST,
        transport=transport,
    )


async def test_restart_resumes_without_repeats_or_refetching(cluster, inboxes, closing, tmp_path):
    state = tmp_path / "alice.sqlite3"
    alice = await cluster.user("alice", state_path=state)
    bob, carol = await cluster.user("bob"), await cluster.user("carol")
    closing += [bob, carol]
    me = alice.session.user.id
    inbox = inboxes(alice)
    await wait_connected(cluster, alice)
    for i in range(5):
        await bob.send_text(me, f"b{i}")
    await carol.send_text(me, "c0")
    assert sorted(e.text for e in await inbox.take(6)) == ["b0", "b1", "b2", "b3", "b4", "c0"]
    await alice.send_text(bob.session.user.id, "mine")  # never yielded, before or after the restart
    await inbox.close()
    await alice.aclose()

    await bob.send_text(me, "b5")  # while alice is away
    await bob.send_text(me, "b6")
    transport = Recording()
    again = _resumed(alice, state, transport)
    closing.append(again)
    inbox = inboxes(again)
    assert [e.text for e in await inbox.take(2)] == ["b5", "b6"]  # after "ready": pushes reach it now
    await carol.send_text(me, "c1")
    assert [e.text for e in await inbox.take(1)] == ["c1"]
    # What was missed came with the changed conversations (their newest messages, after alice's own
    # message), asked for with a sync frame on the connection: no HTTP catch-up request at all.
    assert transport.conversations == []
    assert transport.history == []
    assert inbox.queue.empty()


async def test_stopping_in_the_middle_of_a_batch_resumes_after_the_last_message_yielded(cluster, closing, tmp_path):
    state = tmp_path / "alice.sqlite3"
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    for i in range(5):
        await bob.send_text(alice.session.user.id, f"b{i}")

    # The five arrive in one history page; the application stops after taking two of them.
    first = _resumed(alice, state)
    seen = []
    events = first.events()
    async for event in events:
        seen.append(event.text)
        if len(seen) == 2:
            break
    await events.aclose()
    await first.aclose()
    assert seen == ["b0", "b1"]

    second = _resumed(alice, state)
    closing.append(second)
    rest = []
    async for event in second.events():
        rest.append(event.text)
        if len(rest) == 3:
            break
    assert rest == ["b2", "b3", "b4"]


def test_the_blocking_client_resumes_too(sqlite_cluster, tmp_path):
    cluster = sqlite_cluster
    state = tmp_path / "state.sqlite3"
    alice = cluster.loop.run(cluster.user("alice"))
    bob = cluster.loop.run(cluster.user("bob"))
    me = alice.session.user.id
    for i in range(3):
        cluster.loop.run(bob.send_text(me, f"b{i}"))

    def take(count: int) -> list[str]:
        session = alice.session
        with Client(
            cluster.url, access_token=session.access_token, refresh_token=session.refresh_token, state_path=state
        ) as client:
            texts = []
            for event in client.events():
                texts.append(event.text)
                if len(texts) == count:
                    break
            return texts

    assert take(2) == ["b0", "b1"]
    cluster.loop.run(bob.send_text(me, "b3"))
    assert take(2) == ["b2", "b3"]
    for client in (alice, bob):
        cluster.loop.run(client.aclose())
