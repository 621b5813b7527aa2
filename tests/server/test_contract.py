"""im_server.api.contract: routes derived from the schema's request models."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import ValidationError

from im_schema.groups import UpdateGroupRequest
from im_schema.models import ReadState
from im_schema.rest import HistoryRequest, LogoutRequest, MarkReadRequest, MessagePage
from im_server.api.contract import body_model, route


def test_the_body_holds_the_fields_not_in_the_path_with_strict_scalars() -> None:
    body = body_model(MarkReadRequest)
    assert body is not None and set(body.model_fields) == {"seq"}
    assert body.model_validate({"seq": 5}).seq == 5  # type: ignore[attr-defined]
    for wrong in ("5", 5.5, True, 2**63, -1):
        with pytest.raises(ValidationError):
            body.model_validate({"seq": wrong})
    update = body_model(UpdateGroupRequest)
    assert update is not None and "group_id" not in update.model_fields
    with pytest.raises(ValidationError):
        update.model_validate({"muted_all": "true"})
    with pytest.raises(ValidationError):
        update.model_validate({"unknown": 1})
    assert body_model(LogoutRequest) is None


async def test_a_derived_route_validates_path_query_and_body() -> None:
    router = APIRouter()
    seen: list[object] = []

    @route(router, MarkReadRequest)
    async def mark(request: MarkReadRequest) -> ReadState:
        seen.append(request)
        return ReadState(conversation=request.conversation, read_seq=request.seq, unread=0)

    @route(router, HistoryRequest)
    async def history(request: HistoryRequest) -> MessagePage:
        seen.append(request)
        return MessagePage(conversation=request.conversation, messages=[], has_more=False, max_seq=0)

    app = FastAPI()
    app.include_router(router)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    answer = await client.post("/v1/conversations/d:1:2/read", json={"seq": 3})
    assert answer.status_code == 200 and answer.json() == {"conversation": "d:1:2", "read_seq": 3, "unread": 0}
    assert seen[-1] == MarkReadRequest(conversation="d:1:2", seq=3)
    assert (await client.get("/v1/conversations/g:4/messages", params={"after": 7})).status_code == 200
    assert seen[-1] == HistoryRequest(conversation="g:4", after=7)
    # FastAPI's own validation answers these; the API's handler turns them into 400 with the envelope.
    assert (await client.post("/v1/conversations/d:2:1/read", json={"seq": 3})).status_code == 422
    assert (await client.post("/v1/conversations/d:1:2/read", json={"seq": "3"})).status_code == 422
    assert (await client.get("/v1/conversations/g:4/messages", params={"after": 2**63})).status_code == 422
    assert len(seen) == 2
    await client.aclose()


def test_a_handler_must_take_its_model_and_nothing_that_clashes() -> None:
    router = APIRouter()
    with pytest.raises(TypeError, match="exactly one"):

        @route(router, MarkReadRequest)
        async def no_model(seq: int) -> ReadState:
            raise AssertionError

    with pytest.raises(TypeError, match="clash"):

        @route(router, MarkReadRequest)
        async def clashing(request: MarkReadRequest, conversation: str) -> ReadState:
            raise AssertionError
