"""The realtime handshake as the SDK reads it, against a real WebSocket server that plays the gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets

from im_schema.frames import MessageFrame, ReadyFrame, ResyncFrame
from im_schema.models import Message
from im_sdk import AsyncClient, TransportError
from im_sdk._async_io import open_gateway
from im_sdk.realtime.policy import EARLY_FRAMES_MAX

READY = ReadyFrame(node_id="gw-old", user_id=1, device_id="cli")
PUSH = MessageFrame(
    message=Message(
        conversation="d:1:2",
        seq=5,
        sender=2,
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
        content={"kind": "text", "text": "pushed before ready"},
    )
)


async def _handshake(frames: list[str]) -> Any:
    """What ``_authenticate`` makes of a gateway that answers ``auth`` with ``frames``."""

    async def gateway(connection: Any) -> None:
        auth = json.loads(await connection.recv())
        assert auth == {"type": "auth", "token": "t0k", "protocol": 1}
        for frame in frames:
            await connection.send(frame)
        await connection.wait_closed()

    async with websockets.serve(gateway, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = AsyncClient("http://127.0.0.1:1", access_token="t0k")
        try:
            async with await open_gateway(f"ws://127.0.0.1:{port}/ws") as connection:
                return await client._authenticate(connection)
        finally:
            await client.aclose()


async def test_pushes_before_ready_are_skipped():
    # A gateway of an earlier version pushed what came for the device while it registered it: the
    # catch-up after ready fetches it, so the handshake goes on.
    frames = [PUSH.model_dump_json(), ResyncFrame(reason="x").model_dump_json(), READY.model_dump_json()]
    assert await _handshake(frames) == READY


async def test_a_gateway_that_never_says_ready_fails_the_handshake():
    with pytest.raises(TransportError):
        await _handshake([PUSH.model_dump_json()] * (EARLY_FRAMES_MAX + 1) + [READY.model_dump_json()])


async def test_anything_else_before_ready_fails_the_handshake():
    with pytest.raises(TransportError):
        await _handshake([json.dumps({"type": "pong", "id": "1"}), READY.model_dump_json()])
