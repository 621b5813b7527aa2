"""Hostile input at every entry point: each gets a clear error, and everyone else keeps being served."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from im_schema.limits import CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_PROTOCOL_UNSUPPORTED
from im_schema.rest import GatewayRequest
from im_sdk import BadRequestError, UserNotFoundError
from im_server.services.tokens import TokenCodec
from tests.e2e.conftest import read_until_closed, wait_connected
from tests.support.cluster import TestCluster


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


def _text(text: str) -> dict[str, object]:
    return {"kind": "text", "text": text}


async def _still_serving(cluster, inboxes, closing) -> None:
    """A fresh pair of users can still exchange a message through the same nodes."""
    alice = await cluster.user("calm")
    bob = await cluster.user("calm")
    closing += [alice, bob]
    inbox = inboxes(bob)
    await wait_connected(cluster, bob)
    await alice.send_text(bob.session.user.id, "all good")
    assert (await inbox.next()).text == "all good"


@pytest.fixture
async def http(sqlite_cluster):
    async with httpx.AsyncClient(base_url=sqlite_cluster.url) as client:
        yield client


async def test_rest_rejects_bad_input_with_clear_errors(sqlite_cluster, http, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    auth = {"Authorization": f"Bearer {alice.session.access_token}"}
    good = {"to": bob.session.user.id, "client_msg_id": uuid.uuid4().hex, "content": _text("x")}

    async def expect(response: httpx.Response, status: int, code: str) -> dict:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"]["code"] == code, body
        assert body["error"]["message"]
        return body

    # Malformed JSON, wrong shapes, unknown fields and kinds.
    await expect(await http.post("/v1/messages", headers=auth, content=b"{not json"), 400, "bad_request")
    await expect(await http.post("/v1/messages", headers=auth, json=[1, 2]), 400, "bad_request")
    await expect(await http.post("/v1/messages", headers=auth, json={**good, "extra": 1}), 400, "bad_request")
    await expect(
        await http.post("/v1/messages", headers=auth, json={**good, "content": {"kind": "nuke"}}), 400, "bad_request"
    )
    await expect(
        await http.post("/v1/messages", headers=auth, json={**good, "client_msg_id": "short"}), 400, "bad_request"
    )
    both = {**good, "conversation": "d:1:2"}
    await expect(await http.post("/v1/messages", headers=auth, json=both), 400, "bad_request")
    # Text over the server's limit (4,000), and over the schema's hard ceiling.
    body = await expect(
        await http.post("/v1/messages", headers=auth, json={**good, "content": _text("x" * 4001)}),
        400,
        "text_too_long",
    )
    assert "4000" in body["error"]["message"]
    await expect(
        await http.post("/v1/messages", headers=auth, json={**good, "content": _text("x" * 20_000)}), 400, "bad_request"
    )
    # Bodies over the size limit are refused before they are read.
    await expect(await http.post("/v1/messages", headers=auth, content=b"x" * 300_000), 413, "payload_too_large")
    # A recipient that does not exist, a conversation that is not mine, a malformed conversation id.
    await expect(
        await http.post("/v1/messages", headers=auth, json={**good, "to": "nobody_here"}), 404, "user_not_found"
    )
    await expect(await http.post("/v1/messages", headers=auth, json={**good, "to": 10**12}), 404, "user_not_found")
    foreign = {**good, "to": None, "conversation": "d:999998:999999"}
    await expect(
        await http.post("/v1/messages", headers=auth, json={k: v for k, v in foreign.items() if v}),
        404,
        "conversation_not_found",
    )
    await expect(
        await http.get("/v1/conversations/d:999998:999999/messages", headers=auth), 404, "conversation_not_found"
    )
    await expect(await http.get("/v1/conversations/d:2:1/messages", headers=auth), 400, "bad_request")
    await expect(await http.get("/v1/conversations/zzz/messages", headers=auth), 400, "bad_request")
    await expect(await http.get("/v1/conversations", headers=auth, params={"limit": 10**9}), 400, "bad_request")
    await expect(await http.get("/v1/conversations", headers=auth, params={"since": "yesterday"}), 400, "bad_request")
    await expect(await http.get("/v1/nowhere", headers=auth), 404, "not_found")
    # Registration rules.
    await expect(
        await http.post("/v1/auth/register", json={"username": "x", "password": "password1"}), 400, "bad_request"
    )
    await expect(
        await http.post("/v1/auth/register", json={"username": "valid_name", "password": "short"}), 400, "bad_request"
    )
    await expect(
        await http.post("/v1/auth/register", json={"username": alice.session.user.username, "password": "password1"}),
        409,
        "username_taken",
    )
    await expect(
        await http.post("/v1/auth/login", json={"username": alice.session.user.username, "password": "wrong password"}),
        401,
        "invalid_credentials",
    )
    await expect(
        await http.post("/v1/auth/login", json={"username": "ghost_user", "password": "whatever1"}),
        401,
        "invalid_credentials",
    )
    await expect(await http.post("/v1/auth/refresh", json={"refresh_token": "r" * 40}), 401, "unauthorized")

    # The SDK maps the same errors to typed exceptions.
    with pytest.raises(UserNotFoundError):
        await alice.send_text("nobody_here", "hello?")
    with pytest.raises(BadRequestError) as raised:
        await alice.send_text(bob.session.user.id, "x" * 4001)
    assert raised.value.code == "text_too_long"

    await _still_serving(cluster, inboxes, closing)


async def test_rest_refuses_missing_forged_and_expired_tokens(sqlite_cluster, http):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    token = alice.session.access_token
    await alice.aclose()
    codec = TokenCodec(cluster.settings.signing_key())
    now = int(time.time())
    expired = codec.issue(alice.session.user.id, "dev1", "s", now=now - 7200, ttl=3600)
    foreign = TokenCodec(b"another cluster's key!").issue(alice.session.user.id, "dev1", "s", now=now, ttl=3600)
    head, payload, signature = token.rsplit(".", 2)
    tampered_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")

    cases = {
        None: "unauthorized",
        "": "unauthorized",
        "Basic abc": "unauthorized",
        "Bearer garbage": "unauthorized",
        f"Bearer {expired}": "token_expired",
        f"Bearer {foreign}": "unauthorized",
        f"Bearer {head}.{tampered_payload}.{signature}": "unauthorized",
        f"Bearer {token}".encode() + b"\xe9": "unauthorized",
    }
    for header, code in cases.items():
        headers = {"Authorization": header} if header is not None else {}
        response = await http.get("/v1/me", headers=headers)
        assert response.status_code == 401, header
        assert response.json()["error"]["code"] == code, header
        assert response.headers["www-authenticate"] == "Bearer"
    assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def _gateway(cluster, client) -> str:
    return (await client.request(GatewayRequest())).url


async def test_websocket_handshake_refusals(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    closing.append(alice)
    url = await _gateway(cluster, alice)
    codec = TokenCodec(cluster.settings.signing_key())
    expired = codec.issue(alice.session.user.id, "dev1", "s", now=int(time.time()) - 7200, ttl=60)

    cases = [
        ("{not json", CLOSE_AUTH_FAILED, "bad_request"),
        (json.dumps({"type": "ping"}), CLOSE_AUTH_FAILED, "unauthorized"),
        (
            json.dumps({"type": "send", "to": 1, "client_msg_id": "abcdefgh", "content": _text("x")}),
            CLOSE_AUTH_FAILED,
            "unauthorized",
        ),
        (json.dumps({"type": "auth"}), CLOSE_AUTH_FAILED, "bad_request"),
        (json.dumps({"type": "auth", "token": "forged.token.here"}), CLOSE_AUTH_FAILED, "unauthorized"),
        (json.dumps({"type": "auth", "token": expired}), CLOSE_AUTH_FAILED, "token_expired"),
        (
            json.dumps({"type": "auth", "token": alice.session.access_token, "protocol": 99}),
            CLOSE_PROTOCOL_UNSUPPORTED,
            "unsupported_protocol",
        ),
        (json.dumps({"type": "teleport"}), CLOSE_AUTH_FAILED, "unknown_frame"),
    ]
    for first, close_code, error_code in cases:
        async with websockets.connect(url) as ws:
            await ws.send(first)
            code, frames = await read_until_closed(ws)
        assert code == close_code, first
        assert frames and frames[0]["type"] == "error" and frames[0]["code"] == error_code, (first, frames)

    # Wrong paths are refused at the HTTP level; health answers.
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url.replace("/ws", "/elsewhere")):
            pass
    async with httpx.AsyncClient() as http:
        health = await http.get(url.replace("ws://", "http://").replace("/ws", "/healthz"))
    assert health.status_code == 200 and health.json()["status"] == "ok"

    await _still_serving(cluster, inboxes, closing)


async def test_websocket_auth_timeout(make_cluster):
    cluster = make_cluster(gateways=1, auth_timeout=0.3)
    alice = await cluster.user("alice")
    url = await _gateway(cluster, alice)
    await alice.aclose()
    async with websockets.connect(url) as ws:
        code, _ = await read_until_closed(ws)
    assert code == CLOSE_AUTH_TIMEOUT


async def test_websocket_bad_frames_after_auth_keep_the_connection(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    url = await _gateway(cluster, alice)
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        hostile = [
            ("{oops", "bad_request", None),
            ("[]", "bad_request", None),
            ("42", "bad_request", None),
            (json.dumps({"type": "teleport"}), "unknown_frame", None),
            (json.dumps({"type": "auth", "token": "again"}), "bad_request", None),
            (
                json.dumps(
                    {"type": "send", "to": bob.session.user.id, "client_msg_id": "k" * 12, "content": _text("")}
                ),
                "bad_request",
                "k" * 12,
            ),
            (
                json.dumps({"type": "send", "to": "nobody_at_all", "client_msg_id": "n" * 12, "content": _text("hi")}),
                "user_not_found",
                "n" * 12,
            ),
            (
                json.dumps(
                    {"type": "send", "to": bob.session.user.id, "client_msg_id": "l" * 12, "content": _text("x" * 4001)}
                ),
                "text_too_long",
                "l" * 12,
            ),
            (b"\x00\xff binary garbage", "bad_request", None),
        ]
        for data, code, client_msg_id in hostile:
            await ws.send(data)
            answer = json.loads(await ws.recv())
            assert answer["type"] == "error" and answer["code"] == code, (data, answer)
            assert answer.get("client_msg_id") == client_msg_id
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert json.loads(await ws.recv()) == {"type": "pong", "id": "p1"}
        await ws.send(
            json.dumps(
                {"type": "send", "to": bob.session.user.id, "client_msg_id": "g" * 12, "content": _text("still here")}
            )
        )
        assert json.loads(await ws.recv())["type"] == "ack"


async def test_oversized_frame_closes_only_that_connection(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    closing.append(alice)
    url = await _gateway(cluster, alice)
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send("x" * (cluster.settings.max_frame_bytes + 1))
        code, _ = await read_until_closed(ws)
    assert code == 1009  # message too big
    await _still_serving(cluster, inboxes, closing)


async def test_a_crowd_of_hostile_connections_does_not_disturb_others(sqlite_cluster, inboxes, closing):
    cluster = sqlite_cluster
    alice = await cluster.user("alice")
    closing.append(alice)
    url = await _gateway(cluster, alice)

    async def vandal(i: int) -> None:
        try:
            async with websockets.connect(url) as ws:
                await ws.send(["{", "null", json.dumps({"type": "auth", "token": "x" * 3000})][i % 3])
                await read_until_closed(ws)
        except (ConnectionClosed, OSError, websockets.InvalidStatus):
            pass

    crowd = asyncio.gather(*(vandal(i) for i in range(60)))
    await _still_serving(cluster, inboxes, closing)
    await crowd


async def test_connection_rate_limit_per_address(make_cluster):
    cluster = make_cluster(gateways=1, connect_rate=0.001, connect_burst=3)
    alice = await cluster.user("alice")
    url = await _gateway(cluster, alice)
    await alice.aclose()
    statuses = []
    for _ in range(5):
        try:
            async with websockets.connect(url):
                statuses.append(101)
        except websockets.InvalidStatus as exc:
            statuses.append(exc.response.status_code)
    assert statuses == [101, 101, 101, 429, 429]
