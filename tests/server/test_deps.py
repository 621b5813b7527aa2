"""Routes get their service through a dependency, so a test swaps one service and nothing else."""

from __future__ import annotations

import httpx

from im_schema.models import Message
from im_server.api.deps import get_messaging, get_principal
from im_server.services.auth import Principal
from im_server.storage.messages import message_json
from tests.test_openapi import build_app


class _Messaging:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []

    async def send(self, user_id: int, device_id: str | None, **_: object) -> object:
        self.calls.append((user_id, device_id))

        class _Written:
            json = message_json("d:1:2", 1, user_id, None, "2026-01-01T00:00:00.000Z", b'{"kind":"text","text":"x"}')
            duplicate = False

        return _Written()


async def test_one_service_is_swapped_by_a_dependency_override() -> None:
    app = build_app()
    stand_in = _Messaging()
    app.dependency_overrides[get_messaging] = lambda: stand_in
    app.dependency_overrides[get_principal] = lambda: Principal(user_id=1, device_id="dev1", session_id="s1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = {"to": 2, "client_msg_id": "abcdefgh", "content": {"kind": "text", "text": "x"}}
        answer = await client.post("/v1/messages", json=body)
    assert answer.status_code in (200, 201), answer.text
    assert stand_in.calls == [(1, "dev1")]
    assert Message.model_validate_json(answer.content).sender == 1
