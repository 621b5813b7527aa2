"""Recall, edit, receipts, typing and presence."""

from __future__ import annotations

from fastapi import APIRouter, Response

from im_schema.lifecycle import (
    EditRequest,
    Presence,
    PresenceRequest,
    RecallRequest,
    Receipts,
    ReceiptsRequest,
    TypingRequest,
)
from im_schema.rest import Ok

from ..contract import route
from ..deps import LifecycleDep, PrincipalDep

router = APIRouter(tags=["messages"])


@route(router, RecallRequest)
async def recall(request: RecallRequest, lifecycle: LifecycleDep, principal: PrincipalDep) -> Response:
    """Recall a message: its content is removed and everyone is told (recalling twice changes nothing)."""
    written = await lifecycle.recall(principal.user_id, request.conversation, request.seq)
    return Response(written.json, media_type="application/json")


@route(router, EditRequest)
async def edit(request: EditRequest, lifecycle: LifecycleDep, principal: PrincipalDep) -> Response:
    """Replace the text of my message within the edit window."""
    written = await lifecycle.edit(principal.user_id, request.conversation, request.seq, request.text)
    return Response(written.json, media_type="application/json")


@route(router, ReceiptsRequest)
async def receipts(request: ReceiptsRequest, lifecycle: LifecycleDep, principal: PrincipalDep) -> Receipts:
    """Who has read a message and who has not."""
    return await lifecycle.receipts(principal.user_id, request.conversation, request.seq)


@route(router, TypingRequest)
async def typing(request: TypingRequest, lifecycle: LifecycleDep, principal: PrincipalDep) -> Ok:
    """I am typing (``active``, the default) or stopped."""
    await lifecycle.typing(principal.user_id, request.conversation, request.active)
    return Ok()


@route(router, PresenceRequest)
async def presence(request: PresenceRequest, lifecycle: LifecycleDep, principal: PrincipalDep) -> Presence:
    """Online, or last seen: for friends and fellow group members only."""
    return await lifecycle.presence(principal.user_id, request.user)
