"""Conversations, history and read state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from im_schema.models import ReadState
from im_schema.rest import (
    ConversationPage,
    ConversationsRequest,
    HistoryRequest,
    MarkReadRequest,
    MessagePage,
)

from ..deps import NodeDep, PrincipalDep, parse

router = APIRouter(prefix="/v1", tags=["conversations"])


@router.get("/conversations", response_model=ConversationPage)
async def conversations(
    node: NodeDep, principal: PrincipalDep, since: str | None = None, limit: int | None = None
) -> ConversationPage:
    """My conversations changed since ``since`` (all without it), each with ``max_seq``, ``read_seq``,
    unread count and last message; follow ``cursor`` while ``has_more``."""
    request = parse(ConversationsRequest, since=since, limit=limit)
    return await node.sync.conversations(principal.user_id, request.since, request.limit)


@router.get("/conversations/{conversation}/messages", response_model=MessagePage)
async def history(
    conversation: str,
    node: NodeDep,
    principal: PrincipalDep,
    after: int | None = None,
    before: int | None = None,
    limit: int | None = None,
) -> MessagePage:
    """Messages by seq range: the first ``limit`` after ``after``, or the last ``limit`` before ``before``."""
    request = parse(HistoryRequest, conversation=conversation, after=after, before=before, limit=limit)
    return await node.sync.history(
        principal.user_id,
        request.conversation,
        after=request.after,
        before=request.before,
        limit=request.limit,
    )


@router.post("/conversations/{conversation}/read", response_model=ReadState)
async def mark_read(
    conversation: str,
    node: NodeDep,
    principal: PrincipalDep,
    body: Annotated[dict[str, Any], Body(examples=[{"seq": 42}])],
) -> ReadState:
    """Mark read up to ``seq``. Read state never moves backward and is shared by all my devices."""
    request = parse(MarkReadRequest, **{**body, "conversation": conversation})
    return await node.lifecycle.mark_read(principal.user_id, principal.device_id, request.conversation, request.seq)
