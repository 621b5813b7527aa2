"""The SDK's message stream over a respx-mocked transport: when it opens, what each write carries, and how
it closes (finished, abandoned, never opened, or found closed after a restart)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from im_sdk import AsyncClient

BASE = "http://im.test"
STREAM = f"{BASE}/v1/conversations/d:1:2/messages/5/stream"


def message(text: str, stream: str | None = "open") -> dict:
    return {
        "conversation": "d:1:2",
        "seq": 5,
        "sender": 1,
        "client_msg_id": "key-00001",
        "sent_at": "2026-12-01T10:00:00.000Z",
        "content": {"kind": "text", "text": text},
        "stream": stream,
    }


def progress(length: int) -> dict:
    return {"conversation": "d:1:2", "seq": 5, "length": length, "state": "open"}


def bodies(route: respx.Route) -> list[dict]:
    return [json.loads(call.request.content) for call in route.calls]


@respx.mock
async def test_open_at_first_append_writes_at_offsets_and_finishes_with_the_rest():
    opened = respx.post(f"{BASE}/v1/streams").mock(return_value=httpx.Response(200, json=message("Hel")))
    write = respx.post(STREAM).mock(side_effect=lambda request: httpx.Response(200, json=progress(5)))
    finish = respx.post(f"{STREAM}/finish").mock(return_value=httpx.Response(200, json=message("Hello!", "finished")))
    async with AsyncClient(BASE, access_token="t") as client:
        async with client.stream("d:1:2", client_msg_id="key-00001", reply_to=3, interval=0) as stream:
            await stream.append("")  # nothing: not opened
            assert not opened.called
            await stream.append("Hel")
            await stream.append("lo")
        assert stream.done and stream.message.stream == "finished"
    [open_body] = bodies(opened)
    assert open_body == {
        "conversation": "d:1:2",
        "client_msg_id": "key-00001",
        "text": "Hel",
        "reply_to": 3,
        "mentions": [],
        "mention_all": False,
    }
    assert bodies(write) == [{"offset": 3, "text": "lo"}]
    assert bodies(finish) == [{"abandon": False}]


@respx.mock
async def test_appends_within_the_interval_wait_and_an_exception_abandons_with_them():
    respx.post(f"{BASE}/v1/streams").mock(return_value=httpx.Response(200, json=message("a")))
    write = respx.post(STREAM).mock(return_value=httpx.Response(200, json=progress(2)))
    finish = respx.post(f"{STREAM}/finish").mock(return_value=httpx.Response(200, json=message("abc", "abandoned")))
    async with AsyncClient(BASE, access_token="t") as client:
        stream = client.stream("d:1:2", interval=3600)

        async def fail() -> None:
            async with stream:
                for piece in ("a", "b", "c"):
                    await stream.append(piece)
                raise ValueError("the model broke")

        with pytest.raises(ValueError, match="the model broke"):
            await fail()
    assert not write.called  # held by the interval
    assert bodies(finish) == [{"offset": 1, "text": "bc", "abandon": True}]
    assert stream.message.stream == "abandoned"


@respx.mock
async def test_a_stream_found_closed_after_a_restart_takes_nothing_more():
    respx.post(f"{BASE}/v1/streams").mock(return_value=httpx.Response(200, json=message("final", "finished")))
    write = respx.post(STREAM)
    finish = respx.post(f"{STREAM}/finish")
    async with AsyncClient(BASE, access_token="t") as client:
        async with client.stream("d:1:2", client_msg_id="key-00001", interval=0) as stream:
            await stream.append("again")
            await stream.append(" and again")
        assert stream.done and stream.text == "final"
    assert not write.called and not finish.called


@respx.mock
async def test_a_restarted_writer_rewrites_an_open_stream_from_the_start():
    respx.post(f"{BASE}/v1/streams").mock(return_value=httpx.Response(200, json=message("old draft, longer")))
    write = respx.post(STREAM).mock(return_value=httpx.Response(200, json=progress(9)))
    respx.post(f"{STREAM}/finish").mock(return_value=httpx.Response(200, json=message("new draft", "finished")))
    async with (
        AsyncClient(BASE, access_token="t") as client,
        client.stream("d:1:2", client_msg_id="key-00001", interval=0) as stream,
    ):
        await stream.append("new")
        await stream.append(" draft")
    assert bodies(write) == [{"offset": 0, "text": "new draft"}]


@respx.mock
async def test_stream_writes_are_retried_after_a_lost_answer():
    respx.post(f"{BASE}/v1/streams").mock(return_value=httpx.Response(200, json=message("a")))
    write = respx.post(STREAM).mock(side_effect=[httpx.ConnectError("lost"), httpx.Response(200, json=progress(2))])
    async with AsyncClient(BASE, access_token="t") as client:
        opened = await client.open_stream("d:1:2", "a")
        result = await client.append_stream(opened.conversation, opened.seq, 1, "b")
    assert result.length == 2
    assert bodies(write) == [{"offset": 1, "text": "b"}] * 2
