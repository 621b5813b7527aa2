"""Conversations, history and read state."""

from __future__ import annotations

from fastapi import APIRouter, Response

from im_schema.models import ReadState
from im_schema.rest import ConversationPage, ConversationsRequest, HistoryRequest, MarkReadRequest

from ..contract import route
from ..deps import LifecycleDep, PrincipalDep, SyncDep

router = APIRouter(tags=["conversations"])


@route(router, ConversationsRequest)
async def conversations(request: ConversationsRequest, sync: SyncDep, principal: PrincipalDep) -> ConversationPage:
    """My conversations changed since ``since`` (all without it), each with ``max_seq``, ``read_seq``,
    unread count and last message; follow ``cursor`` while ``has_more``. With ``recent``, each also carries
    its messages of the last ``recent`` seqs (within a budget per page), so that catching up after a short
    absence takes this one request."""
    return await sync.conversations(principal.user_id, request.since, request.limit, request.recent or 0)


@route(router, HistoryRequest)
async def history(request: HistoryRequest, sync: SyncDep, principal: PrincipalDep) -> Response:
    """Messages by seq range: the first ``limit`` after ``after``, or the last ``limit`` before ``before``."""
    # A MessagePage, written from the stored JSON of each message (the response model is the endpoint's).
    page = await sync.history_json(
        principal.user_id,
        request.conversation,
        after=request.after,
        before=request.before,
        limit=request.limit,
    )
    return Response(page, media_type="application/json")


@route(router, MarkReadRequest)
async def mark_read(request: MarkReadRequest, lifecycle: LifecycleDep, principal: PrincipalDep) -> ReadState:
    """Mark read up to ``seq``. Read state never moves backward and is shared by all my devices."""
    return await lifecycle.mark_read(principal.user_id, principal.device_id, request.conversation, request.seq)
