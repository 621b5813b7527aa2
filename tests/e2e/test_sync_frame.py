"""The ``sync`` frame: "conversations since" on the open connection, batched by the gateway to the API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from im_schema.errors import ErrorCode
from im_schema.frames import SyncPageFrame, server_frames
from im_schema.limits import CLOSE_AUTH_FAILED, CLOSE_FLOODING
from im_schema.rest import GatewayRequest
from im_sdk import _async_client as async_client
from im_server.gateway import session as gateway_session
from tests.e2e.conftest import read_until_closed, wait_connected
from tests.support.cluster import TestCluster


class CountingCatchUps(httpx.AsyncHTTPTransport):
    """A real transport that counts the HTTP "conversations since" requests made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.conversations = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/conversations":
            self.conversations += 1
        return await super().handle_async_request(request)


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


async def _connect(client) -> websockets.ClientConnection:
    url = (await client.request(GatewayRequest())).url
    ws = await websockets.connect(url, max_size=2**22)
    await ws.send(json.dumps({"type": "auth", "token": client.session.access_token}))
    assert json.loads(await ws.recv())["type"] == "ready"
    return ws


async def _answer(ws, frame_id: str) -> dict:
    """The next frame answering ``frame_id`` (pushes in between are skipped)."""
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("id") == frame_id and frame["type"] in ("sync", "error"):
                return frame


async def test_a_sync_frame_answers_what_the_rest_endpoint_answers(sqlite_cluster, closing):
    alice, bob = await sqlite_cluster.user("alice"), await sqlite_cluster.user("bob")
    closing += [alice, bob]
    for i in range(3):
        await bob.send_text(alice.session.user.id, f"b{i}")
    ws = await _connect(alice)
    try:
        await ws.send(json.dumps({"type": "sync", "id": "s1", "since": None, "limit": 10, "recent": 20}))
        frame = server_frames.validate_python(await _answer(ws, "s1"))
        assert isinstance(frame, SyncPageFrame) and frame.id == "s1"
        rest = await alice.conversations_page(limit=10, recent=20)
        assert [(c.id, c.max_seq) for c in frame.page.conversations] == [(c.id, c.max_seq) for c in rest.conversations]
        assert [m.content.text for m in frame.page.conversations[0].recent] == ["b0", "b1", "b2"]
        assert frame.page.has_more is False
        # From its cursor, as REST (which repeats what changed within a few seconds of the cursor).
        await ws.send(json.dumps({"type": "sync", "id": "s2", "since": frame.page.cursor}))
        again = await _answer(ws, "s2")
        rest = await alice.conversations_page(since=frame.page.cursor)
        assert again["type"] == "sync" and [c["id"] for c in again["page"]["conversations"]] == [
            c.id for c in rest.conversations
        ]
        # limit pages through, the cursor as with REST.
        await alice.send_text(bob.session.user.id, "to bob")
        carol = await sqlite_cluster.user("carol")
        closing.append(carol)
        await carol.send_text(alice.session.user.id, "from carol")
        await ws.send(json.dumps({"type": "sync", "id": "s3", "limit": 1}))
        first = await _answer(ws, "s3")
        assert len(first["page"]["conversations"]) == 1 and first["page"]["has_more"] is True
        await ws.send(json.dumps({"type": "sync", "id": "s4", "limit": 1, "since": first["page"]["cursor"]}))
        second = await _answer(ws, "s4")
        assert len(second["page"]["conversations"]) == 1
        assert second["page"]["conversations"][0]["id"] != first["page"]["conversations"][0]["id"]
    finally:
        await ws.close()


async def test_hostile_sync_frames_get_an_error_with_their_id_and_the_connection_stays(sqlite_cluster, closing):
    alice = await sqlite_cluster.user("alice")
    closing.append(alice)
    ws = await _connect(alice)
    try:
        hostile = [
            ({"id": "c1", "since": "not-a-cursor"}, "bad_request", "c1"),  # passes the schema, not the API
            ({"id": "c2", "since": "1;drop table"}, "bad_request", "c2"),
            ({"id": "c3", "since": "9" * 65}, "bad_request", "c3"),
            ({"id": "l1", "limit": 0}, "bad_request", "l1"),
            ({"id": "l2", "limit": 1001}, "bad_request", "l2"),
            ({"id": "l3", "limit": "5"}, "bad_request", "l3"),
            ({"id": "l4", "limit": 2.5}, "bad_request", "l4"),
            ({"id": "r1", "recent": 51}, "bad_request", "r1"),
            ({"id": "r2", "recent": -1}, "bad_request", "r2"),
            ({"id": "r3", "recent": True}, "bad_request", "r3"),
            ({"id": "x1", "user_id": 1}, "bad_request", "x1"),  # the device is the connection's, never a field
            ({"id": 7}, "bad_request", None),
            ({"id": ""}, "bad_request", ""),
            ({"id": "i" * 65}, "bad_request", "i" * 64),
            ({}, "bad_request", None),
        ]
        for fields, code, frame_id in hostile:
            await ws.send(json.dumps({"type": "sync", **fields}))
            async with asyncio.timeout(10):
                answer = json.loads(await ws.recv())
            assert answer["type"] == "error" and answer["code"] == code, (fields, answer)
            assert answer.get("id") == frame_id, (fields, answer)
        await ws.send(json.dumps({"type": "sync", "id": "fine", "since": "0"}))
        assert (await _answer(ws, "fine"))["type"] == "sync"
    finally:
        await ws.close()


async def test_a_sync_before_auth_closes_the_connection(sqlite_cluster, closing):
    alice = await sqlite_cluster.user("alice")
    closing.append(alice)
    url = (await alice.request(GatewayRequest())).url
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "sync", "id": "early"}))
        _, frames = await read_until_closed(ws)
    assert ws.close_code == CLOSE_AUTH_FAILED
    assert [frame["code"] for frame in frames] == ["unauthorized"]


async def test_one_sync_in_flight_per_connection(sqlite_cluster, closing):
    alice = await sqlite_cluster.user("alice")
    closing.append(alice)
    ws = await _connect(alice)
    try:
        ids = [f"f{i}" for i in range(20)]
        for frame_id in ids:  # faster than any API answers
            await ws.send(json.dumps({"type": "sync", "id": frame_id}))
        answers = {}
        async with asyncio.timeout(10):
            while len(answers) < len(ids):
                frame = json.loads(await ws.recv())
                assert frame["id"] not in answers
                answers[frame["id"]] = frame
        assert answers["f0"]["type"] == "sync"
        refused = [frame for frame in answers.values() if frame["type"] == "error"]
        assert refused and all(frame["code"] == "rate_limited" and frame["retry_after"] > 0 for frame in refused)
        # Once answered, the next one is taken.
        await ws.send(json.dumps({"type": "sync", "id": "after"}))
        assert (await _answer(ws, "after"))["type"] == "sync"
    finally:
        await ws.close()


async def test_syncs_count_against_the_frame_rate(make_cluster):
    cluster = make_cluster(gateways=1, ws_frame_rate=1, ws_frame_burst=3, ws_flood_limit=5)
    alice = await cluster.user("alice")
    try:
        ws = await _connect(alice)
        with contextlib.suppress(ConnectionClosed):
            for i in range(50):
                await ws.send(json.dumps({"type": "sync", "id": f"s{i}"}))
        codes = [frame.get("code") for frame in (await read_until_closed(ws))[1]]
        assert ws.close_code == CLOSE_FLOODING
        assert "rate_limited" in codes
    finally:
        await alice.aclose()


async def test_syncs_arriving_together_go_to_the_api_in_batches(make_cluster):
    # One request in flight at a time: whatever arrives meanwhile waits for the next, together.
    cluster = make_cluster(gateways=1, gateway_send_lanes=1)
    users = [await cluster.user("many") for _ in range(30)]
    sockets = []
    try:
        for user in users:
            sockets.append(await _connect(user))
        metrics = cluster.api.node.metrics
        before_count = metrics.value("im_forwarded_sync_batch_size_count")
        before_sum = metrics.value("im_forwarded_sync_batch_size_sum")
        for ws in sockets:
            await ws.send(json.dumps({"type": "sync", "id": "together", "recent": 20}))
        for ws in sockets:
            assert (await _answer(ws, "together"))["type"] == "sync"
        requests = metrics.value("im_forwarded_sync_batch_size_count") - before_count
        assert metrics.value("im_forwarded_sync_batch_size_sum") - before_sum == len(sockets)
        assert requests < len(sockets)
    finally:
        for ws in sockets:
            await ws.close()
        for user in users:
            await user.aclose()


def _syncs(cluster: TestCluster) -> float:
    return sum(node.metrics.value("im_gateway_syncs_total") for node in cluster.gateways)


async def test_a_device_back_from_a_dead_gateway_catches_up_through_the_frame(make_cluster, inboxes):
    cluster = make_cluster(gateways=2)
    transport = CountingCatchUps()
    alice, bob = await cluster.user("alice"), await cluster.user("bob", transport=transport)
    try:
        inbox = inboxes(bob)
        node_id = await wait_connected(cluster, bob)
        await alice.send_text(bob.session.user.id, "before")
        assert (await inbox.next()).text == "before"
        [lost] = [node for node in cluster.gateways if node.node_id == node_id]
        cluster.stop_gateway(lost)  # its clients reconnect to the other one
        for i in range(3):
            await alice.send_text(bob.session.user.id, f"while away {i}")
        assert [(await inbox.next()).text for _ in range(3)] == [f"while away {i}" for i in range(3)]
        assert await wait_connected(cluster, bob) != node_id
        await alice.send_text(bob.session.user.id, "after")
        assert (await inbox.next()).text == "after"
        assert _syncs(cluster) >= 1  # the other gateway answered its catch-up...
        assert transport.conversations == 0  # ...and none went over HTTP
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_with_a_gateway_that_does_not_know_the_frame_the_sdk_catches_up_over_http(
    make_cluster, inboxes, monkeypatch
):
    # What a gateway from before the sync frame answers to it.
    receive = gateway_session.GatewaySession.receive

    def older(self, data):
        action = receive(self, data)
        if isinstance(action, gateway_session.Sync):
            return gateway_session.Reply(
                gateway_session._error(ErrorCode.UNKNOWN_FRAME, "unknown or missing frame type")
            )
        return action

    monkeypatch.setattr(gateway_session.GatewaySession, "receive", older)
    cluster = make_cluster(gateways=1)
    transport = CountingCatchUps()
    alice, bob = await cluster.user("alice"), await cluster.user("bob", transport=transport)
    try:
        await alice.send_text(bob.session.user.id, "waiting")
        inbox = inboxes(bob)
        assert (await inbox.next()).text == "waiting"
        assert transport.conversations >= 1
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_a_frame_refused_for_the_frame_rate_names_what_it_refuses_and_when_to_retry(make_cluster):
    # Refused before it is read as a frame: the answer still carries the sync's id (or the send's
    # client_msg_id), as far as the bytes give them, so the client retries that request after the hint.
    cluster = make_cluster(gateways=1, ws_frame_rate=0.1, ws_frame_burst=1, ws_flood_limit=20)
    alice = await cluster.user("alice")
    try:
        ws = await _connect(alice)
        await ws.send(json.dumps({"type": "sync", "id": "taken"}))  # the one frame the burst allows
        refused = [
            ({"type": "sync", "id": "again"}, {"id": "again"}),
            (
                {"type": "send", "to": 1, "client_msg_id": "m1", "content": {"kind": "text", "text": "x"}},
                {"client_msg_id": "m1"},
            ),
            ({"type": "sync", "id": "i" * 65}, {"id": "i" * 64}),
            ({"type": "sync", "id": 7}, {}),
            ({"type": "sync", "id": ["a"]}, {}),
            ({"type": "sync"}, {}),
            ({"type": "ping", "id": "p1"}, {}),  # only a sync's id names what waits for an answer
            ({"type": "send", "client_msg_id": {"x": 1}}, {}),
            (["sync", "x"], {}),
            ("not json", {}),
        ]
        for frame, _ in refused:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        answers: list[dict] = []
        taken = None
        async with asyncio.timeout(10):
            while len(answers) < len(refused) or taken is None:
                answer = json.loads(await ws.recv())
                if answer.get("id") == "taken":
                    taken = answer
                else:
                    answers.append(answer)
        assert taken["type"] == "sync"  # the frame the rate let through is answered as usual
        for (frame, ids), answer in zip(refused, answers, strict=True):
            assert answer["type"] == "error" and answer["code"] == "rate_limited", (frame, answer)
            assert answer["retry_after"] > 0, (frame, answer)
            assert {key: answer[key] for key in ("id", "client_msg_id") if key in answer} == ids, (frame, answer)
        assert ws.close_code is None  # told to slow down, not cut off (the flood limit is not reached)
        await ws.close()
    finally:
        await alice.aclose()


async def test_the_sdk_sends_a_sync_refused_for_the_frame_rate_again_after_the_hint(make_cluster, inboxes, monkeypatch):
    # Without the id in the refusal the SDK would wait its whole answer timeout for the page (and hold
    # every push meanwhile); the timeout is made longer than the test to tell the two apart.
    monkeypatch.setattr(async_client, "SYNC_ANSWER_TIMEOUT", 300.0)
    cluster = make_cluster(gateways=1, ws_frame_rate=0.2, ws_frame_burst=1)
    gateway = cluster.gateways[0]
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    try:
        await alice.send_text(bob.session.user.id, "before")
        inbox = inboxes(bob)
        assert (await inbox.next()).text == "before"  # caught up by the sync frame the burst allowed

        async def resync() -> None:
            gateway.resync_all("test")

        refused = gateway.metrics.value("im_errors_total", code="rate_limited")
        await cluster.loop.call(resync())  # the SDK syncs again at once: a frame the rate refuses
        await cluster.until(lambda: gateway.metrics.value("im_errors_total", code="rate_limited") > refused)
        await alice.send_text(bob.session.user.id, "after")
        assert (await inbox.next(timeout=30)).text == "after"
        assert gateway.metrics.value("im_gateway_syncs_total") >= 2  # the retried sync, answered
    finally:
        await alice.aclose()
        await bob.aclose()


async def _until_past(moment: float) -> None:
    """Wait until the wall clock passes ``moment`` (tokens expire by it; nothing else to wait on)."""
    async with asyncio.timeout(max(0.0, moment - time.time()) + 10):
        while time.time() <= moment:
            await asyncio.sleep(0.05)


async def test_a_sync_refused_for_a_token_past_its_grace_refreshes_it_and_carries_on(make_cluster, inboxes):
    # The API takes a forwarded token until refresh_token_ttl after it expired. A connection older than
    # that syncs as "unauthorized"; the SDK refreshes (its refresh token was renewed meanwhile) and
    # reconnects with the new token instead of ending its event stream.
    cluster = make_cluster(gateways=1, access_token_ttl=2, refresh_token_ttl=6)
    gateway = cluster.gateways[0]
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    try:
        first = bob.session.access_token
        claims = gateway._tokens.verify(first, now=0)
        inbox = inboxes(bob)
        await alice.send_text(bob.session.user.id, "before")
        assert (await inbox.next()).text == "before"
        await _until_past(claims.expires_at + 2.5)
        for client in (alice, bob):  # as any HTTP call after the expiry would: a new refresh token, valid longer
            await client.refresh()
        await _until_past(claims.expires_at + 6)
        assert cluster.api.node.forwarded.verify(first) is None  # the connection's token is past its grace

        async def resync() -> None:
            gateway.resync_all("test")

        api = cluster.api.node.metrics
        refused = api.value("im_errors_total", code="unauthorized")
        await cluster.loop.call(resync())
        await cluster.until(lambda: api.value("im_errors_total", code="unauthorized") > refused)
        await alice.send_text(bob.session.user.id, "after")
        assert (await inbox.next(timeout=20)).text == "after"
        assert inbox.error is None
        assert bob.session.access_token != first
    finally:
        await alice.aclose()
        await bob.aclose()
