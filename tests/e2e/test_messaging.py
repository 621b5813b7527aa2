"""Messages between users across gateway nodes, over real NATS, real sockets and real databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid

import pytest
import websockets

from im_schema import direct_conversation
from im_sdk import AsyncClient
from tests.e2e.conftest import wait_connected
from tests.support.cluster import FAST, PASSWORD, TestCluster


@pytest.fixture
def cluster(shared_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster per database."""
    return shared_cluster


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


async def _on_different_gateways(cluster: TestCluster, alice: AsyncClient) -> AsyncClient:
    """A user whose assigned gateway differs from alice's."""
    assert alice.session is not None
    node = cluster.api.node  # type: ignore[union-attr]
    home = node.assign_gateway(alice.session.user.id, alice.session.device_id).node_id
    for attempt in range(50):
        bob = await cluster.user("bob", device=f"phone{attempt}")
        assert bob.session is not None
        if node.assign_gateway(bob.session.user.id, bob.session.device_id).node_id != home:
            return bob
        await bob.aclose()
    raise AssertionError("rendezvous hashing put 50 users on one node")


async def test_two_users_on_two_gateways_exchange_messages(cluster, inboxes, closing):
    alice = await cluster.user("alice")
    bob = await _on_different_gateways(cluster, alice)
    closing += [alice, bob]
    alice_in, bob_in = inboxes(alice), inboxes(bob)
    alice_node = await wait_connected(cluster, alice)
    bob_node = await wait_connected(cluster, bob)
    assert alice_node != bob_node

    sent = await alice.send_text(bob.session.user.username, "hello bob")
    got = await bob_in.next()
    assert (got.conversation, got.seq, got.text, got.sender) == (
        sent.conversation,
        1,
        "hello bob",
        alice.session.user.id,
    )

    reply = await got.reply("hi alice")
    back = await alice_in.next()
    assert (back.seq, back.text) == (reply.seq, "hi alice") == (2, "hi alice")


async def test_offline_user_gets_everything_in_order_on_login(cluster, inboxes, closing):
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    texts = [f"while you were away {i}" for i in range(40)]
    for text in texts:
        await alice.send_text(bob.session.user.id, text)

    later = await cluster.device(bob, "laptop")
    closing.append(later)
    events = await inboxes(later).take(len(texts))
    assert [event.text for event in events] == texts
    assert [event.seq for event in events] == list(range(1, 41))

    [summary] = await later.conversations()
    assert (summary.max_seq, summary.read_seq, summary.unread) == (40, 0, 40)
    assert summary.last_message is not None and summary.last_message.content.text == texts[-1]


async def test_dropped_connection_resyncs_without_loss_or_duplicates(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    bob_in = inboxes(bob)
    await wait_connected(cluster, bob)
    key = (bob.session.user.id, bob.session.device_id)

    async def drop_bob() -> None:
        for node in cluster.gateways:
            connection = node.connections.get(key)
            if connection is not None:
                connection.transport.abort()  # as if the network went away: no close handshake

    sent = 0
    progress = asyncio.Condition()

    async def send_many(count: int) -> None:
        nonlocal sent
        for i in range(count):
            await alice.send_text(bob.session.user.id, f"m{i}")
            async with progress:
                sent += 1
                progress.notify_all()

    sender = asyncio.create_task(send_many(150))
    for mark in (30, 70, 110):  # drop it three times while messages are flowing
        async with progress:
            await progress.wait_for(lambda mark=mark: sent >= mark)
        await cluster.loop.call(drop_bob())
    await sender
    await alice.send_text(bob.session.user.id, "end")

    events = await bob_in.until_text("end", timeout=30)
    assert [event.text for event in events] == [f"m{i}" for i in range(150)] + ["end"]
    assert [event.seq for event in events] == list(range(1, 152))


async def test_repeated_client_msg_id_is_stored_once(cluster, closing):
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    key = uuid.uuid4().hex
    first = await alice.send_text(bob.session.user.id, "once", client_msg_id=key)
    again = await alice.send_text(bob.session.user.id, "once", client_msg_id=key)
    assert again == first

    # The same key over the WebSocket path answers with the stored message too.
    assignment = await alice.request(__import__("im_schema.rest", fromlist=["GatewayRequest"]).GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        frame = {
            "type": "send",
            "to": bob.session.user.id,
            "client_msg_id": key,
            "content": {"kind": "text", "text": "once"},
        }
        for _ in range(2):
            await ws.send(json.dumps(frame))
            ack = json.loads(await ws.recv())
            assert ack["type"] == "ack" and ack["message"]["seq"] == first.seq

    page = await bob.history(first.conversation, after=0)
    assert [m.seq for m in page.messages] == [1]


async def test_websocket_send_is_acked_after_commit_and_pushed(cluster, inboxes, closing):
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    bob_in = inboxes(bob)
    await wait_connected(cluster, bob)
    assignment = await alice.request(__import__("im_schema.rest", fromlist=["GatewayRequest"]).GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        keys = [uuid.uuid4().hex for _ in range(20)]
        for i, key in enumerate(keys):
            await ws.send(
                json.dumps(
                    {
                        "type": "send",
                        "to": bob.session.user.username,
                        "client_msg_id": key,
                        "content": {"kind": "text", "text": f"ws{i}"},
                    }
                )
            )
        acks = [json.loads(await ws.recv()) for _ in keys]
    assert sorted(a["client_msg_id"] for a in acks) == sorted(keys)
    assert sorted(a["message"]["seq"] for a in acks) == list(range(1, 21))
    events = await bob_in.take(20)
    assert [e.text for e in events] == [f"ws{i}" for i in range(20)]


async def test_senders_other_devices_get_the_message_but_not_the_sending_one(cluster, inboxes, closing):
    alice = await cluster.user("alice")
    alice_phone = await cluster.device(alice, "phone")
    bob = await cluster.user("bob")
    closing += [alice, alice_phone, bob]
    alice_in, phone_in = inboxes(alice), inboxes(alice_phone)
    await bob.send_text(alice.session.user.id, "to both")
    assert (await alice_in.next()).text == "to both"  # both devices are live and synced from here on
    assert (await phone_in.next()).text == "to both"

    await alice.send_text(bob.session.user.id, "from the laptop")
    mirrored = await phone_in.next()
    assert (mirrored.text, mirrored.sender) == ("from the laptop", alice.session.user.id)

    await bob.send_text(alice.session.user.id, "again")
    assert (await alice_in.next()).text == "again"  # not "from the laptop": the sending device skips it
    assert (await phone_in.next()).text == "again"


async def test_route_to_a_dead_node_counts_as_offline(make_cluster, inboxes, closing):
    cluster = make_cluster(gateways=1)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    process, url = cluster.spawn_gateway_process("gw-doomed")
    subject = f"{cluster.settings.subject_prefix}.gw.gw-doomed"

    # Bob's device connects to the doomed node, which registers its route.
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bob.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"

        watcher = await cluster.observer()
        published: asyncio.Queue[bytes] = asyncio.Queue()

        async def record(msg):
            await published.put(msg.data)

        await watcher.subscribe(subject, cb=record)
        await alice.send_text(bob.session.user.id, "while alive")
        async with asyncio.timeout(5):
            data = await published.get()
            while data == b"probe":  # an API node's liveness probe may come first
                data = await published.get()
            assert b"while alive" in data
        assert json.loads(await ws.recv())["message"]["content"]["text"] == "while alive"

        process.send_signal(signal.SIGKILL)  # no clean-up: its routes stay in the registry
        process.wait(10)

    await cluster.until(lambda: "gw-doomed" not in cluster.live_gateways(), timeout=15)
    routes = cluster.api.node.mirror.routes.devices(bob.session.user.id)
    # The stale route is still there, or already removed by an API node (a dead node's routes are reaped)...
    assert routes.get(bob.session.device_id) in ("gw-doomed", None)
    await alice.send_text(bob.session.user.id, "after death")
    await watcher.flush()
    pushed = []
    while not published.empty():
        pushed.append(published.get_nowait())
    assert all(data == b"probe" for data in pushed)  # ...but nothing is published to the dead node
    # (API nodes may probe it: a liveness check, not a delivery)
    await watcher.close()

    # The message is not lost: Bob gets both when he comes back (on a live node).
    bob_in = inboxes(bob)
    assert [e.text for e in await bob_in.take(2)] == ["while alive", "after death"]

    # A node restarting with the same id purges the routes it left behind.
    cluster.spawn_gateway_process("gw-doomed")

    table = cluster.api.node.mirror.routes
    await cluster.until(lambda: table.devices(bob.session.user.id).get("dev1") != "gw-doomed")


async def test_gateway_assignment_uses_live_nodes_and_moves_only_that_nodes_share(make_cluster, closing):
    cluster = make_cluster(gateways=3)
    node = cluster.api.node
    before = {(u, "d"): node.assign_gateway(u, "d").node_id for u in range(1, 301)}
    assert len(set(before.values())) == 3
    leaving = cluster.gateways[0]
    left_id = leaving.node_id
    cluster.stop_gateway(leaving)
    await cluster.until(lambda: left_id not in cluster.live_gateways())
    after = {key: node.assign_gateway(*key).node_id for key in before}
    moved = [key for key in before if before[key] != after[key]]
    assert left_id not in after.values()
    assert all(before[key] == left_id for key in moved)


async def test_graceful_gateway_stop_moves_clients_without_loss(make_cluster, inboxes, closing):
    cluster = make_cluster(gateways=2)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    bob_in = inboxes(bob)
    node_id = await wait_connected(cluster, bob)
    await alice.send_text(bob.session.user.id, "before")
    assert (await bob_in.next()).text == "before"

    leaving = next(node for node in cluster.gateways if node.node_id == node_id)
    stopping = asyncio.create_task(cluster.loop.call(leaving.stop()))
    for i in range(20):
        await alice.send_text(bob.session.user.id, f"during {i}")
    await stopping
    cluster.gateways.remove(leaving)
    assert await wait_connected(cluster, bob) != node_id
    await alice.send_text(bob.session.user.id, "after")
    events = await bob_in.until_text("after")
    assert [e.text for e in events] == [f"during {i}" for i in range(20)] + ["after"]


async def test_history_paging_and_read_state(cluster, closing):
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    for i in range(25):
        await alice.send_text(bob.session.user.id, f"h{i}")
    conversation = direct_conversation(alice.session.user.id, bob.session.user.id)

    latest = await bob.history(conversation, limit=10)
    assert [m.seq for m in latest.messages] == list(range(16, 26)) and latest.has_more
    older = await bob.history(conversation, before=16, limit=10)
    assert [m.seq for m in older.messages] == list(range(6, 16))
    forward = await bob.history(conversation, after=20, limit=10)
    assert [m.seq for m in forward.messages] == [21, 22, 23, 24, 25] and not forward.has_more

    state = await bob.mark_read(conversation, 10)
    assert (state.read_seq, state.unread) == (10, 15)
    state = await bob.mark_read(conversation, 3)  # never backward
    assert (state.read_seq, state.unread) == (10, 15)
    state = await bob.mark_read(conversation, 999)  # capped at max_seq
    assert (state.read_seq, state.unread) == (25, 0)
    # Alice's own messages count as read for her.
    [mine] = await alice.conversations()
    assert (mine.read_seq, mine.unread) == (25, 0)


async def test_sync_client_twin(cluster):
    from im_sdk import Client

    alice = await cluster.user("alice")
    username = alice.session.user.username
    await alice.aclose()

    def script() -> list[str]:
        with Client(cluster.url) as client:
            client.login(username, PASSWORD, device="script")
            bob_name = f"syncbob{uuid.uuid4().hex[:6]}"
            client.register(bob_name, PASSWORD)
            message = client.send_text(bob_name, "from a script")
            with Client(cluster.url, backoff=FAST) as bob:
                bob.login(bob_name, PASSWORD)
                events = bob.events()
                first = next(events)
                first.reply("thanks")
                page = client.history(message.conversation, after=0)
                events.close()
                return [first.text or "", *[m.content.text for m in page.messages]]

    assert await asyncio.to_thread(script) == ["from a script", "from a script", "thanks"]


async def test_a_send_before_events_starts_is_not_yielded_back(sqlite_cluster, inboxes, closing):
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    closing += [alice, bob]
    await alice.send_text(bob.session.user.id, "mine, sent before listening")
    await bob.send_text(alice.session.user.id, "theirs")
    inbox = inboxes(alice, start="all")  # "all" would replay the whole conversation: except my own sends
    assert (await inbox.next()).text == "theirs"


async def test_pipelined_sends_of_several_connections_keep_each_connections_order(make_cluster, closing):
    # Several forwarding requests in flight per gateway: each connection's sends still reach the message
    # service in the order it sent them (its acks come back in that order, with rising seqs).
    from im_schema.rest import GatewayRequest

    cluster = make_cluster(gateways=1, gateway_send_lanes=4, send_rate=100_000, send_burst=100_000)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    carol = await cluster.user("carol")
    closing += [alice, bob, carol]
    count = 40

    async def pipeline(client: AsyncClient, to: int, tag: str) -> list[tuple[str, int]]:
        assignment = await client.request(GatewayRequest())
        async with websockets.connect(assignment.url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": client.session.access_token}))
            assert json.loads(await ws.recv())["type"] == "ready"
            for index in range(count):  # all written before any ack is read
                frame = {"type": "send", "to": to, "client_msg_id": f"{tag}{index:08d}"}
                await ws.send(json.dumps({**frame, "content": {"kind": "text", "text": f"{tag} {index}"}}))
            acks = []
            while len(acks) < count:
                frame = json.loads(await ws.recv())
                if frame["type"] == "ack":
                    acks.append((frame["client_msg_id"], frame["message"]["seq"]))
            return acks

    carol_id = carol.session.user.id
    first, second = await asyncio.gather(pipeline(alice, carol_id, "alice"), pipeline(bob, carol_id, "bobby"))
    for tag, acks in (("alice", first), ("bobby", second)):
        assert [key for key, _ in acks] == [f"{tag}{index:08d}" for index in range(count)]
        seqs = [seq for _, seq in acks]
        assert seqs == sorted(seqs) and len(set(seqs)) == count


async def test_a_gateway_whose_requests_are_all_stuck_refuses_new_sends_at_once(make_cluster, closing):
    # No message service answers (the API stopped taking sends): the gateway's one request slot stays taken
    # and sends wait behind it. Past IM_GATEWAY_MAX_QUEUE_WAIT the gateway answers new sends "busy" at once,
    # with a retry_after, instead of queueing them for the whole forward deadline.
    from im_schema.rest import GatewayRequest

    cluster = make_cluster(gateways=1, gateway_send_lanes=1, gateway_max_queue_wait=0.05, gateway_forward_deadline=60.0)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    api = cluster.api.node
    await cluster.loop.call(api._subscriptions[0].unsubscribe())  # the queue-group subscription to sends
    assignment = await alice.request(GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"

        def send(index: int) -> str:
            frame = {"type": "send", "to": bob.session.user.id, "client_msg_id": f"stuck{index:08d}"}
            return json.dumps({**frame, "content": {"kind": "text", "text": f"stuck {index}"}})

        await ws.send(send(0))  # takes the only request slot, and keeps it (nobody answers)
        await ws.send(send(1))  # waits for the slot
        refused = None
        for index in range(2, 2000):  # until one arrives after the first waiting send got too old
            await ws.send(send(index))
            with contextlib.suppress(TimeoutError):
                refused = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
                break
        assert refused is not None
        assert refused["type"] == "error" and refused["code"] == "unavailable", refused
        assert refused["retry_after"] > 0 and refused["client_msg_id"].startswith("stuck")
