"""Recall, edit, receipts, typing and presence."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from im_schema.lifecycle import (
    EditRequest,
    Presence,
    PresenceRequest,
    RecallRequest,
    Receipts,
    ReceiptsRequest,
    TypingRequest,
)
from im_schema.models import Message
from im_schema.rest import Ok

from ..deps import NodeDep, PrincipalDep, parse
from .social import user_ref

router = APIRouter(prefix="/v1", tags=["messages"])

OptionalBody = Annotated[dict[str, Any] | None, Body()]
JsonBody = Annotated[dict[str, Any], Body()]


@router.post("/conversations/{conversation}/messages/{seq}/recall", response_model=Message)
async def recall(conversation: str, seq: str, node: NodeDep, principal: PrincipalDep) -> Response:
    """Recall a message: its content is removed and everyone is told (recalling twice changes nothing)."""
    request = parse(RecallRequest, conversation=conversation, seq=seq)
    written = await node.lifecycle.recall(principal.user_id, request.conversation, request.seq)
    return Response(written.json, media_type="application/json")


@router.patch("/conversations/{conversation}/messages/{seq}", response_model=Message)
async def edit(conversation: str, seq: str, body: JsonBody, node: NodeDep, principal: PrincipalDep) -> Response:
    """Replace the text of my message within the edit window."""
    request = parse(EditRequest, **{**body, "conversation": conversation, "seq": seq})
    written = await node.lifecycle.edit(principal.user_id, request.conversation, request.seq, request.text)
    return Response(written.json, media_type="application/json")


@router.get("/conversations/{conversation}/messages/{seq}/receipts", response_model=Receipts)
async def receipts(conversation: str, seq: str, node: NodeDep, principal: PrincipalDep) -> Receipts:
    """Who has read a message and who has not."""
    request = parse(ReceiptsRequest, conversation=conversation, seq=seq)
    return await node.lifecycle.receipts(principal.user_id, request.conversation, request.seq)


@router.post("/conversations/{conversation}/typing", response_model=Ok)
async def typing(conversation: str, node: NodeDep, principal: PrincipalDep, body: OptionalBody = None) -> Ok:
    """I am typing (``active``, the default) or stopped."""
    request = parse(TypingRequest, **{**(body or {}), "conversation": conversation})
    await node.lifecycle.typing(principal.user_id, request.conversation, request.active)
    return Ok()


@router.get("/users/{user}/presence", response_model=Presence)
async def presence(user: str, node: NodeDep, principal: PrincipalDep) -> Presence:
    """Online, or last seen: for friends and fellow group members only."""
    request = parse(PresenceRequest, user=user_ref(user))
    return await node.lifecycle.presence(principal.user_id, request.user)
