"""A blank message is refused on every send path, and nothing is stored.

Blank: only whitespace and characters that draw nothing (see :func:`im_schema.content.is_blank`). Over HTTP
the answer is ``400 bad_request`` whose details name the ``string_blank`` error; over the WebSocket an
``error`` frame ``bad_request`` naming the send's ``client_msg_id``. The SDK refuses before sending. Texts
with something visible are stored exactly as sent, blanks around them included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from pydantic import ValidationError

from im_schema.content import FileContent, TextContent
from im_schema.groups import CreateGroupRequest
from im_schema.rest import GatewayRequest
from tests.e2e.conftest import stored_history
from tests.support.cluster import TestCluster

BLANKS = [
    " ",
    "\n\n",
    "\t \r\n",
    "\u3000",
    "\u00a0",
    "\u200b",
    "\ufeff",
    "\u2800\u3164\uffa0",
    "\u200e\u202e\u2066\u2060",
    "\u200d\ufe0f",
    " \u200b\u3000\ufeff\u00a0\n",
]


@pytest.fixture
def cluster(module_cluster: TestCluster) -> TestCluster:
    """The module's shared cluster: these tests make users of their own."""
    return module_cluster


@pytest.fixture
async def world(cluster: TestCluster, closing: list[object]) -> AsyncIterator[dict[str, Any]]:
    """alice and bob (friends), a group of alice's with bob in it, and one message from alice to each."""
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    assert alice.session and bob.session
    await cluster.friends(alice, bob)
    direct = await alice.send_text(bob.session.user.id, "hi")
    group = await alice.request(CreateGroupRequest(name="club", members=[bob.session.user.id]))
    await alice.send_text(group.conversation, "hello club")
    headers = {"Authorization": f"Bearer {alice.session.access_token}"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers) as http:
        yield {"http": http, "alice": alice, "bob": bob, "direct": direct.conversation, "group": group.conversation}


def _refused_as_blank(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.request.url, response.text)
    error = response.json()["error"]
    assert error["code"] == "bad_request", error
    assert [detail["type"] for detail in error["details"]] == ["string_blank"], error


async def _texts(world: dict[str, Any], conversation: str) -> list[object]:
    """What the conversation holds: each message's text, or its content when it has no text."""
    messages = await stored_history(world["bob"], conversation)
    return [m.content.text if isinstance(m.content, TextContent) else m.content.kind for m in messages]


async def test_blank_messages_are_refused_over_http(world: dict[str, Any]) -> None:
    http: httpx.AsyncClient = world["http"]
    direct, group = world["direct"], world["group"]
    before = {direct: await _texts(world, direct), group: await _texts(world, group)}
    for text in BLANKS:
        content = {"kind": "text", "text": text}
        for target in ({"conversation": direct}, {"conversation": group}, {"to": world["bob"].session.user.id}):
            body = {**target, "client_msg_id": uuid.uuid4().hex, "content": content}
            _refused_as_blank(await http.post("/v1/messages", json=body))
        body = {"conversation": direct, "client_msg_id": uuid.uuid4().hex, "text": text}
        _refused_as_blank(await http.post("/v1/streams", json=body))
        _refused_as_blank(await http.patch(f"/v1/conversations/{direct}/messages/1", json={"text": text}))
    assert {direct: await _texts(world, direct), group: await _texts(world, group)} == before
    first = (await stored_history(world["bob"], direct))[0]
    assert first.edited_at is None and first.content == TextContent(text="hi")
    [summary] = [found for found in await world["bob"].conversations() if found.id == direct]
    assert summary.unread == 1
    # Blanks around something visible are kept exactly as sent (nothing is stripped).
    for text in ("\u3000hi\u3000", "\n x \n", "\u200b.\u200b"):
        body = {"conversation": direct, "client_msg_id": uuid.uuid4().hex, "content": {"kind": "text", "text": text}}
        sent = await http.post("/v1/messages", json=body)
        assert sent.status_code == 200, sent.text
    edited = await http.patch(f"/v1/conversations/{direct}/messages/1", json={"text": " hi again "})
    assert edited.status_code == 200 and edited.json()["content"]["text"] == " hi again ", edited.text
    texts = await _texts(world, direct)
    assert texts[0] == " hi again " and texts[-4:] == ["\u3000hi\u3000", "\n x \n", "\u200b.\u200b", "system"]


async def test_a_blank_caption_is_refused_and_no_caption_is_fine(world: dict[str, Any]) -> None:
    http: httpx.AsyncClient = world["http"]
    direct = world["direct"]
    upload = await http.post("/v1/files", params={"name": "notes.txt"}, content=b"some notes")
    assert upload.status_code == 201, upload.text
    blob = upload.json()["blob"]
    before = await _texts(world, direct)
    for kind in ("file", "image", "voice", "video"):
        for caption in ("  ", "\u3000", "\u200b\ufeff"):
            content = {"kind": kind, "blob": blob, "caption": caption}
            body = {"conversation": direct, "client_msg_id": uuid.uuid4().hex, "content": content}
            _refused_as_blank(await http.post("/v1/messages", json=body))
    assert await _texts(world, direct) == before
    body = {"conversation": direct, "client_msg_id": uuid.uuid4().hex, "content": {"kind": "file", "blob": blob}}
    sent = await http.post("/v1/messages", json=body)
    assert sent.status_code == 200, sent.text
    [last] = (await stored_history(world["bob"], direct))[-1:]
    assert isinstance(last.content, FileContent) and last.content.caption is None


async def test_blank_messages_are_refused_over_the_websocket(world: dict[str, Any]) -> None:
    alice, direct, group = world["alice"], world["direct"], world["group"]
    before = {direct: await _texts(world, direct), group: await _texts(world, group)}
    assignment = await alice.request(GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        for number, text in enumerate(BLANKS):
            for conversation in (direct, group):
                client_msg_id = f"blank-{number:03d}-{conversation[0]}"
                frame = {
                    "type": "send",
                    "conversation": conversation,
                    "client_msg_id": client_msg_id,
                    "content": {"kind": "text", "text": text},
                }
                await ws.send(json.dumps(frame))
                answer = json.loads(await ws.recv())
                assert answer["type"] == "error" and answer["code"] == "bad_request", (text, answer)
                assert answer["client_msg_id"] == client_msg_id
        frame = {
            "type": "send",
            "conversation": direct,
            "client_msg_id": "not-blank-01",
            "content": {"kind": "text", "text": "\u3000ok\n"},
        }
        await ws.send(json.dumps(frame))
        answer = json.loads(await ws.recv())
        assert answer["type"] == "ack", answer
    assert await _texts(world, group) == before[group]
    assert await _texts(world, direct) == [*before[direct], "\u3000ok\n"]


async def test_the_sdk_refuses_blanks_before_sending(world: dict[str, Any]) -> None:
    alice, direct = world["alice"], world["direct"]
    before = await _texts(world, direct)
    for text in BLANKS:
        with pytest.raises(ValidationError, match="should not be blank"):
            await alice.send_text(direct, text)
        with pytest.raises(ValidationError, match="should not be blank"):
            await alice.edit(direct, 1, text)
        with pytest.raises(ValidationError, match="should not be blank"):
            await alice.open_stream(direct, text)
    uploaded: list[int] = []
    with pytest.raises(ValidationError, match="should not be blank"):
        await alice.send_file(
            direct, b"never uploaded", caption="\u3000", progress=lambda done, _: uploaded.append(done)
        )
    assert uploaded == []  # refused before the upload
    assert await _texts(world, direct) == before


async def test_a_stream_opens_once_it_shows_something(world: dict[str, Any]) -> None:
    alice, direct = world["alice"], world["direct"]
    before = await _texts(world, direct)
    async with alice.stream(direct, interval=0) as blank:
        for piece in ("\n", " ", "\u200b"):
            await blank.append(piece)
        assert blank.message is None
    assert await _texts(world, direct) == before  # only blanks: nothing was stored
    async with alice.stream(direct, interval=0) as stream:
        await stream.append("\n\n")
        assert stream.message is None
        await stream.append("Hello")
        assert stream.message is not None and stream.message.content == TextContent(text="\n\nHello")
        await stream.append(" ")
        await stream.append("world\n")
    assert await _texts(world, direct) == [*before, "\n\nHello world\n"]
