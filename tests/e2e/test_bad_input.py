"""Input that storage cannot hold is refused by the schema, the same on SQLite and on PostgreSQL.

NUL characters (PostgreSQL cannot store them), integers past 2**63-1, non-ASCII digits as ids, times
past year 9999, non-strict booleans and integers, a streamed body past the limit: each is a 4xx with the
error envelope, never a 500, and the nodes keep serving.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from im_schema.groups import CreateGroupRequest
from im_schema.rest import GatewayRequest
from tests.support.cluster import TestCluster

BIG = 2**63
HUGE = "9" * 30


@pytest.fixture
def cluster(module_cluster: TestCluster) -> TestCluster:
    """The module's shared cluster (see ``module_cluster``): these tests make users of their own and
    leave the nodes as they found them."""
    return module_cluster


async def _expect(response: httpx.Response, status: int = 400, code: str = "bad_request") -> dict[str, Any]:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


@pytest.fixture
async def world(cluster: TestCluster, closing: list[object]) -> AsyncIterator[dict[str, Any]]:
    """alice and bob (friends), a group of alice's with bob in it, and a message from alice to bob."""
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    assert alice.session and bob.session
    await cluster.friends(alice, bob)
    sent = await alice.send_text(bob.session.user.id, "hi")
    group = await alice.request(CreateGroupRequest(name="club", members=[bob.session.user.id]))
    headers = {"Authorization": f"Bearer {alice.session.access_token}"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers) as http:
        yield {
            "http": http,
            "bob": bob.session.user,
            "conversation": sent.conversation,
            "group": group.id,
            "client": alice,
        }


async def test_nul_characters_are_refused_everywhere(world: dict[str, Any]) -> None:
    http: httpx.AsyncClient = world["http"]
    bob, conversation, group = world["bob"], world["conversation"], world["group"]
    nul = "a\x00b"

    def text(value: str) -> dict[str, Any]:
        return {"to": bob.id, "client_msg_id": uuid.uuid4().hex, "content": {"kind": "text", "text": value}}

    await _expect(
        await http.post("/v1/auth/register", json={"username": "nul1", "password": "p" * 8, "display_name": nul})
    )
    await _expect(await http.post("/v1/auth/register", json={"username": "nu\x00l", "password": "p" * 8}))
    for field in ("display_name", "bio", "avatar"):
        await _expect(await http.patch("/v1/me/profile", json={field: nul}))
    await _expect(await http.post("/v1/messages", json=text(nul)))
    await _expect(await http.patch(f"/v1/conversations/{conversation}/messages/1", json={"text": nul}))
    await _expect(await http.post("/v1/friends/requests", json={"to": "nobody", "message": nul}))
    await _expect(await http.patch(f"/v1/friends/{bob.id}", json={"remark": nul}))
    await _expect(await http.post("/v1/groups", json={"name": nul}))
    await _expect(await http.patch(f"/v1/groups/{group}", json={"name": nul}))
    await _expect(await http.put(f"/v1/groups/{group}/announcement", json={"text": nul}))
    await _expect(await http.patch(f"/v1/groups/{group}/me", json={"nickname": nul}))
    await _expect(await http.patch(f"/v1/groups/{group}/me", json={"remark": nul}))
    await _expect(await http.post(f"/v1/groups/{group}/join", json={"message": nul}))
    await _expect(await http.get("/v1/users/bo%00b"))
    await _expect(await http.get("/v1/conversations", params={"since": "1\x00"}))
    # A file name is cleaned instead (it is only a label): the NUL goes, the rest stays.
    upload = await http.post("/v1/files", params={"name": "re\x00port.txt"}, content=b"hello")
    assert upload.status_code == 201, upload.text
    assert upload.json()["name"] == "report.txt"
    # The same texts without the NUL are stored and read back.
    sent = await http.post("/v1/messages", json=text("a b"))
    assert sent.status_code == 200, sent.text
    profile = await http.patch("/v1/me/profile", json={"bio": "tab\tand newline\n are fine"})
    assert profile.status_code == 200 and profile.json()["bio"] == "tab\tand newline\n are fine"


async def test_integers_past_storage_are_refused(world: dict[str, Any]) -> None:
    http: httpx.AsyncClient = world["http"]
    bob, conversation, group = world["bob"], world["conversation"], world["group"]
    base = {"to": bob.id, "client_msg_id": uuid.uuid4().hex, "content": {"kind": "text", "text": "x"}}

    await _expect(await http.get("/v1/conversations", params={"since": HUGE}))
    await _expect(await http.get("/v1/conversations", params={"since": f"{HUGE}:{conversation}"}))
    await _expect(await http.get("/v1/conversations", params={"since": "²"}))
    for recent in (BIG, -1, 51, "x", 1.5):  # the newest messages carried per conversation: 0 to 50
        await _expect(await http.get("/v1/conversations", params={"recent": recent}))
    await _expect(await http.get(f"/v1/conversations/{conversation}/messages", params={"after": BIG}))
    await _expect(await http.get(f"/v1/conversations/{conversation}/messages", params={"before": HUGE}))
    await _expect(await http.get(f"/v1/groups/{group}/members", params={"after": BIG}))
    await _expect(await http.post(f"/v1/friends/requests/{HUGE}/accept"))
    await _expect(await http.post(f"/v1/friends/requests/{BIG}/decline"))
    await _expect(await http.post(f"/v1/groups/{group}/requests/{BIG}/approve"))
    await _expect(await http.post(f"/v1/groups/{group}/requests/{HUGE}/reject"))
    await _expect(await http.get(f"/v1/groups/{BIG}"))
    await _expect(await http.post(f"/v1/conversations/{conversation}/messages/{BIG}/recall"))
    await _expect(await http.get(f"/v1/conversations/{conversation}/messages/{HUGE}/receipts"))
    await _expect(await http.post(f"/v1/conversations/{conversation}/read", json={"seq": BIG}))
    await _expect(await http.post(f"/v1/conversations/d:1:{BIG}/read", json={"seq": 1}))
    await _expect(await http.post("/v1/messages", json={**base, "reply_to": BIG}))
    await _expect(await http.post("/v1/messages", json={**base, "mentions": [BIG]}))
    await _expect(await http.post("/v1/messages", json={**base, "to": BIG}))
    await _expect(await http.post("/v1/blocks", json={"user": BIG}))
    await _expect(await http.post(f"/v1/groups/{group}/kick", json={"user": BIG}))
    # Strict JSON: a string, a fraction or a boolean is not an integer, a string not a boolean.
    for seq in ("1", 1.5, True):
        await _expect(await http.post(f"/v1/conversations/{conversation}/read", json={"seq": seq}))
    for active in ("yes", "true", 1):
        await _expect(await http.post(f"/v1/conversations/{conversation}/typing", json={"active": active}))
    await _expect(await http.patch(f"/v1/groups/{group}", json={"muted_all": "false"}))
    # The largest id storage holds is merely not found.
    await _expect(await http.get(f"/v1/groups/{BIG - 1}"), 404, "group_not_found")
    read = await http.post(f"/v1/conversations/{conversation}/read", json={"seq": 1})
    assert read.status_code == 200, read.text


async def test_only_ascii_digits_name_a_user(world: dict[str, Any]) -> None:
    http: httpx.AsyncClient = world["http"]
    bob, group = world["bob"], world["group"]
    for digits in ("²", "٣", "\uff11", f"{bob.id}²"):
        await _expect(await http.get(f"/v1/users/{digits}"))
        await _expect(await http.get(f"/v1/users/{digits}/presence"))
        await _expect(await http.get(f"/v1/friends/{digits}"))
        await _expect(await http.delete(f"/v1/blocks/{digits}"))
        await _expect(await http.delete(f"/v1/groups/{group}/admins/{digits}"))
    await _expect(await http.get("/v1/groups/٣"))
    await _expect(await http.get(f"/v1/users/{BIG}"))
    found = await http.get(f"/v1/users/{bob.id}")
    assert found.status_code == 200 and found.json()["username"] == bob.username
    by_name = await http.get(f"/v1/users/{bob.username}")
    assert by_name.status_code == 200 and by_name.json()["id"] == bob.id


async def test_times_are_bounded(world: dict[str, Any]) -> None:
    http: httpx.AsyncClient = world["http"]
    bob, group = world["bob"], world["group"]
    for until in (
        "9999-12-31T23:59:59-05:00",
        "9999-12-31T12:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "1969-12-31T23:59:59Z",
    ):
        await _expect(await http.post(f"/v1/groups/{group}/mute", json={"user": bob.id, "until": until}))
    await _expect(await http.post(f"/v1/groups/{group}/mute", json={"user": bob.id, "until": "10000-01-01T00:00:00Z"}))
    # The latest time allowed is stored and read back.
    muted = await http.post(f"/v1/groups/{group}/mute", json={"user": bob.id, "until": "9999-12-30T00:00:00+00:00"})
    assert muted.status_code == 200, muted.text
    members = await http.get(f"/v1/groups/{group}/members")
    assert members.status_code == 200, members.text
    (entry,) = [member for member in members.json()["members"] if member["user"]["id"] == bob.id]
    assert entry["muted_until"].startswith("9999-12-30T00:00:00")


async def test_a_streamed_body_past_the_limit_is_413(world: dict[str, Any], cluster: TestCluster) -> None:
    http: httpx.AsyncClient = world["http"]
    limit = cluster.settings.max_body_bytes
    chunk = b" " * 4096

    async def stream(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            yield chunk[: total - sent]
            sent += len(chunk[: total - sent])

    headers = {"Content-Type": "application/json"}
    too_big = await http.post("/v1/messages", content=stream(limit + 1), headers=headers)
    assert "content-length" not in too_big.request.headers
    await _expect(too_big, 413, "payload_too_large")
    await _expect(
        await http.patch("/v1/me/profile", content=stream(limit * 3), headers=headers), 413, "payload_too_large"
    )
    # A streamed body within the limit is read as usual.

    async def small() -> AsyncIterator[bytes]:
        yield b'{"bio": '
        yield b'"streamed"}'

    profile = await http.patch("/v1/me/profile", content=small(), headers=headers)
    assert profile.status_code == 200 and profile.json()["bio"] == "streamed", profile.text


async def test_websocket_frames_are_held_to_the_same_schema(world: dict[str, Any], cluster: TestCluster) -> None:
    client = world["client"]
    bob, conversation = world["bob"], world["conversation"]
    assignment = await client.request(GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": client.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        hostile: list[dict[str, Any]] = [
            {"to": bob.id, "content": {"kind": "text", "text": "a\x00b"}},
            {"to": BIG, "content": {"kind": "text", "text": "x"}},
            {"to": "²", "content": {"kind": "text", "text": "x"}},
            {"conversation": conversation, "reply_to": BIG, "content": {"kind": "text", "text": "x"}},
            {"conversation": conversation, "mentions": [BIG], "content": {"kind": "text", "text": "x"}},
            {"conversation": conversation, "mention_all": "yes", "content": {"kind": "text", "text": "x"}},
        ]
        for number, frame in enumerate(hostile):
            client_msg_id = f"hostile-{number:04d}"
            await ws.send(json.dumps({"type": "send", "client_msg_id": client_msg_id, **frame}))
            answer = json.loads(await ws.recv())
            assert answer["type"] == "error" and answer["code"] == "bad_request", (frame, answer)
            assert answer["client_msg_id"] == client_msg_id
        await ws.send(json.dumps({"type": "typing", "conversation": f"d:1:{BIG}"}))
        assert json.loads(await ws.recv())["code"] == "bad_request"
        frame = {"type": "send", "to": bob.id, "client_msg_id": "fine-0001", "content": {"kind": "text", "text": "ok"}}
        await ws.send(json.dumps(frame))
        assert json.loads(await ws.recv())["type"] == "ack"
