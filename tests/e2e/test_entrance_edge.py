"""The edge of the cluster against real sockets: the gateway's frame rate, IP allow and deny lists
changed at run time, metrics behind a token or on their own listener, bounded request heads."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from im_schema.limits import CLOSE_FLOODING
from im_schema.rest import GatewayRequest
from im_server.bus.nats import Bus
from im_server.cluster.access import AccessAdmin
from tests.support.cluster import TestCluster


async def _connect(cluster: TestCluster, client):
    assignment = await client.request(GatewayRequest())
    ws = await websockets.connect(assignment.url)
    await ws.send(json.dumps({"type": "auth", "token": client.session.access_token, "protocol": 1}))
    assert json.loads(await ws.recv())["type"] == "ready"
    return ws


async def _until_closed(ws) -> list[dict]:
    answers = []
    async with asyncio.timeout(10):
        try:
            while True:
                answers.append(json.loads(await ws.recv()))
        except websockets.ConnectionClosed:
            return answers


async def test_a_flooding_connection_is_told_then_closed(make_cluster, closing):
    cluster = make_cluster(gateways=1, ws_frame_rate=0.001, ws_frame_burst=3, ws_flood_limit=2)
    alice = await cluster.user("alice")
    closing.append(alice)
    ws = await _connect(cluster, alice)
    for index in range(6):
        await ws.send(json.dumps({"type": "ping", "id": str(index)}))
    answers = await _until_closed(ws)
    assert [a["type"] for a in answers] == ["pong", "pong", "pong", "error", "error"]
    assert all(a["code"] == "rate_limited" and a["retry_after"] > 0 for a in answers[3:])
    assert ws.close_code == CLOSE_FLOODING
    # Only that connection: the same user connects again and is served.
    again = await _connect(cluster, alice)
    await again.send(json.dumps({"type": "ping", "id": "x"}))
    assert json.loads(await again.recv())["type"] == "pong"
    await again.close()


async def test_a_client_that_slows_down_is_not_closed(make_cluster, closing):
    cluster = make_cluster(gateways=1, ws_frame_rate=1000.0, ws_frame_burst=2, ws_flood_limit=1)
    alice = await cluster.user("alice")
    closing.append(alice)
    ws = await _connect(cluster, alice)
    for round_ in range(3):
        # One refusal in a row is allowed; the client then waits for its pong before sending more.
        for index in range(3):
            await ws.send(json.dumps({"type": "ping", "id": f"{round_}.{index}"}))
        kinds = [json.loads(await ws.recv())["type"] for _ in range(3)]
        assert kinds.count("pong") >= 2 and set(kinds) <= {"pong", "error"}
        await asyncio.sleep(0.01)  # the bucket refills (1000 frames a second)
    await ws.send(json.dumps({"type": "ping", "id": "last"}))
    assert json.loads(await ws.recv())["type"] == "pong"
    await ws.close()


@pytest.fixture
def admin(make_cluster):
    """A cluster and an :class:`AccessAdmin` on its bus (run in the cluster's loop)."""
    cluster = make_cluster(gateways=1, access_refresh=0.05, trusted_proxies=["127.0.0.1/32"])
    bus = Bus(cluster.settings, name="access-admin")
    cluster.loop.run(bus.connect())
    yield cluster, AccessAdmin(bus)
    cluster.loop.run(bus.close())


async def test_allow_and_deny_lists_apply_at_run_time(admin, closing):
    cluster, lists = admin
    alice = await cluster.user("alice")
    closing.append(alice)
    gateway_url = (await alice.request(GatewayRequest())).url
    api, gateway = cluster.api.node, cluster.gateways[0]
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        me = {"Authorization": f"Bearer {alice.session.access_token}"}
        assert (await http.get("/v1/me", headers=me)).status_code == 200

        # Deny a network: a client forwarded from it is refused by API and gateway alike.
        await cluster.loop.call(lists.put("deny", "203.0.113.0/24", note="abuse"))
        await cluster.until(lambda: not api.access.rules.admits("203.0.113.9"))
        await cluster.until(lambda: not gateway.access.rules.admits("203.0.113.9"))
        refused = await http.get("/v1/me", headers={**me, "X-Forwarded-For": "203.0.113.9"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        login = await http.post("/v1/auth/login", json={}, headers={"X-Forwarded-For": "203.0.113.9"})
        assert login.status_code == 403
        assert (await http.get("/v1/me", headers={**me, "X-Forwarded-For": "198.51.100.1"})).status_code == 200
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(gateway_url, additional_headers={"X-Forwarded-For": "203.0.113.9"})
        assert info.value.response.status_code == 403
        # Health stays open to load balancers.
        assert (await http.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})).status_code == 200

        # An allow list admits only what it lists (IPv6 too); the deny list still wins inside it.
        await cluster.loop.call(lists.put("allow", "2001:db8::/32"))
        await cluster.loop.call(lists.put("allow", "203.0.113.0/24"))
        await cluster.until(lambda: not gateway.access.rules.admits("198.51.100.1"))
        await cluster.until(lambda: not api.access.rules.admits("198.51.100.1"))
        assert (await http.get("/v1/me", headers={**me, "X-Forwarded-For": "198.51.100.1"})).status_code == 403
        assert (await http.get("/v1/me", headers={**me, "X-Forwarded-For": "2001:db8::5"})).status_code == 200
        assert (await http.get("/v1/me", headers={**me, "X-Forwarded-For": "203.0.113.9"})).status_code == 403
        async with websockets.connect(gateway_url, additional_headers={"X-Forwarded-For": "2001:db8::5"}):
            pass
        entries = await cluster.loop.call(lists.entries())
        assert [(e.list, str(e.network), e.note) for e in entries] == [
            ("allow", "203.0.113.0/24", ""),
            ("allow", "2001:db8::/32", ""),
            ("deny", "203.0.113.0/24", "abuse"),
        ]

        # Removing entries takes effect the same way.
        assert await cluster.loop.call(lists.remove("203.0.113.0/24")) == ["allow", "deny"]
        assert await cluster.loop.call(lists.remove("2001:db8::/32", "allow")) == ["allow"]
        assert await cluster.loop.call(lists.remove("10.0.0.0/8")) == []
        await cluster.until(lambda: api.access.rules.admits("198.51.100.1"))
        await cluster.until(lambda: gateway.access.rules.admits("198.51.100.1"))
        assert (await http.get("/v1/me", headers={**me, "X-Forwarded-For": "203.0.113.9"})).status_code == 200


async def test_a_garbage_entry_in_the_bucket_is_ignored(admin):
    cluster, lists = admin
    api = cluster.api.node
    await cluster.loop.call(lists.put("deny", "192.0.2.0/24"))
    kv = await cluster.loop.call(lists._kv())
    await cluster.loop.call(kv.put("deny.4-c0000200-24", b"not json"))
    await cluster.loop.call(kv.put("deny.4-00000000-0", b'{"cidr": "10.0.0.0/8"}'))  # key and CIDR disagree
    await cluster.loop.call(kv.put("other.x", b'{"cidr": "0.0.0.0/0"}'))
    await cluster.loop.call(lists.put("deny", "198.51.100.0/24"))
    await cluster.until(lambda: not api.access.rules.admits("198.51.100.1"))
    rules = api.access.rules
    assert rules.admits("192.0.2.1") and rules.admits("10.1.1.1") and rules.admits("8.8.8.8")


async def test_metrics_need_the_token_or_the_separate_listener(make_cluster):
    cluster = make_cluster(gateways=1, metrics_token="m" * 24, metrics_port=0)
    gateway = cluster.gateways[0]
    gateway_http = gateway.url.replace("ws://", "http://").replace("/ws", "")
    async with httpx.AsyncClient() as http:
        for base in (cluster.url, gateway_http):
            assert (await http.get(f"{base}/metrics")).status_code == 401
            wrong = await http.get(f"{base}/metrics", headers={"Authorization": "Bearer " + "x" * 24})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
            right = await http.get(f"{base}/metrics", headers={"Authorization": "Bearer " + "m" * 24})
            assert right.status_code == 200 and "im_event_loop_lag_seconds" in right.text
        for listener in (cluster.api.metrics_listener, gateway.metrics_listener):
            base = f"http://127.0.0.1:{listener.port}"
            assert "im_event_loop_lag_seconds" in (await http.get(f"{base}/metrics")).text
            assert (await http.get(f"{base}/")).status_code == 404


async def test_metrics_are_not_public_by_default(make_cluster):
    cluster = make_cluster(gateways=1)
    gateway_http = cluster.gateways[0].url.replace("ws://", "http://").replace("/ws", "")
    async with httpx.AsyncClient() as http:
        for base in (cluster.url, gateway_http):
            assert (await http.get(f"{base}/metrics")).status_code == 404
            assert (await http.get(f"{base}/healthz")).status_code == 200
    assert cluster.api.metrics_listener.port is None


async def _closed_without_answer(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    async with asyncio.timeout(10):
        answer = await reader.read(65536)
        while chunk := await reader.read(65536):
            answer += chunk
    writer.close()
    return answer


async def test_request_heads_are_bounded_in_size_and_time(make_cluster):
    cluster = make_cluster(gateways=1, header_timeout=0.2, max_header_bytes=2048)
    api_host, api_port = cluster.url.removeprefix("http://").split(":")
    gateway_host, gateway_port = cluster.gateways[0].url.removeprefix("ws://").removesuffix("/ws").split(":")
    for host, port in ((api_host, int(api_port)), (gateway_host, int(gateway_port))):
        # A head that never completes: the connection is closed.
        assert await _closed_without_answer(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") == b""
        # A head larger than the limit is refused, even when it arrives at once.
        huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n"
        answer = await _closed_without_answer(host, port, huge)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    # After a response, a kept-alive connection gets the same deadline for its next head.
    reader, writer = await asyncio.open_connection(api_host, int(api_port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(10):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        while await reader.read(65536):
            pass  # the rest of the first answer, then the close
    writer.close()
    # Ordinary requests are untouched.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{cluster.url}/healthz")).status_code == 200


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:"))
    return head + await reader.readexactly(length)


async def test_a_head_limit_counts_the_head_not_what_follows_it(make_cluster):
    cluster = make_cluster(gateways=1, header_timeout=5, max_header_bytes=2048)
    host, port = cluster.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    async with asyncio.timeout(10):
        # A small head and a body larger than the head limit, in one write: answered, connection kept.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + b"a" * 4096)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200 ")
        # A complete request and, pipelined behind it, the start of a head that then grows past the limit.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nX-Big: ")
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200 ")
        writer.write(b"a" * 4096)
        rest = b""
        while chunk := await reader.read(65536):
            rest += chunk
    writer.close()
    assert rest.startswith(b"HTTP/1.1 431 "), rest[:300]
