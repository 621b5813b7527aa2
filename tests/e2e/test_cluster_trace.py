"""`GET /v1/admin/cluster/trace/...` over a real cluster (every node answers from its trace ring), and
the frame rates gateways carry in their heartbeats."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from im_schema.admin import ClusterNodesRequest, TraceMessageRequest
from im_schema.groups import CreateGroupRequest
from im_schema.ids import direct_conversation
from im_sdk import ForbiddenError
from im_server.services.admin import bootstrap_admin
from tests.support.cluster import TestCluster
from tests.support.faults import RawDevice, connect_device, text_frame


async def _admin(cluster: TestCluster):
    client = await cluster.user("admin")
    await bootstrap_admin(cluster.settings.db_url, client.session.user.username, None)
    return client


async def _ws_send(device: RawDevice, to: int, text: str) -> dict:
    frame = text_frame(to, text)
    key = frame.split('"client_msg_id":"', 1)[1].split('"', 1)[0]
    await device.connection.send(frame)
    await device.until(lambda d: key in d.acks)
    return device.acks[key][0]


async def test_trace_follows_a_message_to_its_gateways_and_devices(make_cluster, closing):
    cluster = make_cluster(gateways=2)
    root = await _admin(cluster)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob", device="phone")
    bob_laptop = await cluster.device(bob, "laptop")
    closing += [root, alice, bob, bob_laptop]
    sender = await connect_device(alice)
    phone = await connect_device(bob)
    laptop = await connect_device(bob_laptop)
    devices = [sender, phone, laptop]
    try:
        bob_id = bob.session.user.id
        message = await _ws_send(sender, bob_id, "trace me")
        for device in (phone, laptop):
            await device.until(lambda d: message["seq"] in d.seen.get(message["conversation"], set()))
        gateway_of = {key: node.node_id for node in cluster.gateways for key in node.connections if key[0] in (bob_id,)}
        alice_gateway = next(
            node.node_id for node in cluster.gateways if (alice.session.user.id, "dev1") in node.connections
        )

        trace = await root.request(TraceMessageRequest(conversation=message["conversation"], seq=message["seq"]))
        assert trace.sender == alice.session.user.id and trace.client_msg_id
        assert trace.stored_by == cluster.api.node.node_id
        by_node = {node.node_id: node for node in trace.nodes}
        api = by_node[cluster.api.node.node_id]
        assert api.stored_at is not None
        # Published once per gateway holding a device of bob, with that gateway's count of his devices.
        expected: dict[str, int] = {}
        for node_id in gateway_of.values():
            expected[node_id] = expected.get(node_id, 0) + 1
        assert api.published == expected
        pushed = {
            (push.user_id, push.device_id, push.kind, node.node_id) for node in trace.nodes for push in node.pushes
        }
        for (user, device), node_id in gateway_of.items():
            assert (user, device, "push", node_id) in pushed
        assert (alice.session.user.id, "dev1", "ack", alice_gateway) in pushed
        assert not trace.aged_out and not trace.silent
        assert trace.unread == [bob_id] and trace.read == []

        await bob.mark_read(message["conversation"], message["seq"])
        again = await root.request(TraceMessageRequest(conversation=message["conversation"], seq=message["seq"]))
        assert again.read == [bob_id] and again.read_count == 1 and again.unread_count == 0
    finally:
        for device in devices:
            await device.close()


async def test_trace_is_for_admins_only(make_cluster, closing):
    cluster = make_cluster(gateways=1)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    sent = await alice.send_text(bob.session.user.id, "private")
    with pytest.raises(ForbiddenError):
        await alice.request(TraceMessageRequest(conversation=sent.conversation, seq=sent.seq))
    async with httpx.AsyncClient(base_url=cluster.url) as raw:
        answer = await raw.get(f"/v1/admin/cluster/trace/{sent.conversation}/{sent.seq}")
        assert answer.status_code == 401


async def test_trace_hostile_input(make_cluster, closing):
    cluster = make_cluster(gateways=1)
    root = await _admin(cluster)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [root, alice, bob]
    a, b = alice.session.user.id, bob.session.user.id
    sent = await alice.send_text(b, "hello")
    group = await alice.request(CreateGroupRequest(name="tracers", members=[b]))
    in_group = await alice.send_text(group.conversation, "hi all")
    headers = {"Authorization": f"Bearer {root.session.access_token}"}
    low, high = sorted((a, b))
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers) as raw:
        # Every accepted form of a conversation id: direct (also percent-encoded) and group.
        for path in (
            f"/v1/admin/cluster/trace/d:{low}:{high}/{sent.seq}",
            f"/v1/admin/cluster/trace/d%3A{low}%3A{high}/{sent.seq}",
            f"/v1/admin/cluster/trace/{group.conversation}/{in_group.seq}",
        ):
            answer = await raw.get(path)
            assert answer.status_code == 200, (path, answer.text)
        assert (await raw.get(f"/v1/admin/cluster/trace/{group.conversation}/{in_group.seq}")).json()["unread"] == [b]
        # Well formed but unknown: no such message.
        for path in (
            f"/v1/admin/cluster/trace/d:{high + 1000}:{high + 1001}/1",
            "/v1/admin/cluster/trace/g:999999999/1",
            f"/v1/admin/cluster/trace/d:{low}:{high}/{2**63 - 1}",
            f"/v1/admin/cluster/trace/d:{low}:{high}/0",
        ):
            answer = await raw.get(path)
            assert answer.status_code == 404, (path, answer.text)
        # Malformed: refused before anything is asked.
        for path in (
            f"/v1/admin/cluster/trace/d:{high}:{low}/1",
            f"/v1/admin/cluster/trace/d:{low}:{low}/1",
            "/v1/admin/cluster/trace/d:0:1/1",
            "/v1/admin/cluster/trace/g:0/1",
            "/v1/admin/cluster/trace/g:1e3/1",
            "/v1/admin/cluster/trace/x/1",
            "/v1/admin/cluster/trace/" + "g:" + "9" * 60 + "/1",
            f"/v1/admin/cluster/trace/d:{low}:{high}/{2**63}",
            f"/v1/admin/cluster/trace/d:{low}:{high}/{10**40}",
            f"/v1/admin/cluster/trace/d:{low}:{high}/-1",
            f"/v1/admin/cluster/trace/d:{low}:{high}/1.5",
        ):
            answer = await raw.get(path)
            assert answer.status_code in (400, 404), (path, answer.text)
            assert answer.json()["error"]["code"] in ("bad_request", "not_found"), path
    assert direct_conversation(a, b) == sent.conversation


async def test_trace_says_when_records_aged_out(make_cluster, closing, inboxes):
    cluster = make_cluster(gateways=1, trace_capacity=2)
    root = await _admin(cluster)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [root, alice, bob]
    receiver = await connect_device(bob)
    try:
        sent = [await alice.send_text(bob.session.user.id, f"m{index}") for index in range(4)]
        last = sent[-1]
        await receiver.until(lambda d: last.seq in d.seen.get(last.conversation, set()))
        old = await root.request(TraceMessageRequest(conversation=sent[0].conversation, seq=sent[0].seq))
        gateway = cluster.gateways[0].node_id
        assert cluster.api.node.node_id in old.aged_out and gateway in old.aged_out
        assert old.nodes == [] and old.stored_by is None
        recent = await root.request(TraceMessageRequest(conversation=last.conversation, seq=last.seq))
        assert recent.stored_by == cluster.api.node.node_id and not recent.aged_out
    finally:
        await receiver.close()


async def test_gateway_frame_rates_move_with_traffic(make_cluster, closing):
    cluster = make_cluster(gateways=1)
    root = await _admin(cluster)
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [root, alice, bob]
    sender = await connect_device(alice)
    receiver = await connect_device(bob)
    gateway = cluster.gateways[0].node_id

    async def figures():
        nodes = (await root.request(ClusterNodesRequest())).nodes
        return next(node for node in nodes if node.node_id == gateway)

    try:
        before = await figures()
        assert before.frames_in is not None and before.frames_out is not None
        moving = None
        async with asyncio.timeout(20):
            while moving is None:
                # Traffic through the gateway until a heartbeat shows it (each beat rates its own interval).
                for index in range(5):
                    await _ws_send(sender, bob.session.user.id, f"load {index}")
                now = await figures()
                counted = now.frames_in >= before.frames_in + 5 and now.frames_out >= before.frames_out + 10
                if counted and (now.frames_in_per_s or 0) > 0 and (now.frames_out_per_s or 0) > 0:
                    moving = now
        api = next(node for node in (await root.request(ClusterNodesRequest())).nodes if node.role == "api")
        assert api.frames_in_per_s is None
    finally:
        await sender.close()
        await receiver.close()
