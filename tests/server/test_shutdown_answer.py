"""A request cut off by an API node's graceful shutdown answers 503 (retry elsewhere), never 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from im_server.api.server import _CutOffAnswer503


async def _run(app: Any, *, cancel: bool) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(_CutOffAnswer503(app)({"type": "http"}, receive, send))
    await asyncio.sleep(0.01)
    if cancel:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return sent


async def test_a_request_cut_off_before_its_answer_is_503_unavailable():
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()  # a handler still waiting when the shutdown's deadline comes

    sent = await _run(slow, cancel=True)
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "unavailable"


async def test_an_answer_already_started_is_left_alone():
    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.Event().wait()

    sent = await _run(streaming, cancel=True)
    assert [message.get("status") for message in sent] == [200]


async def test_answers_pass_through():
    async def fine(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = await _run(fine, cancel=False)
    assert sent[0]["status"] == 201 and sent[1]["body"] == b"{}"
