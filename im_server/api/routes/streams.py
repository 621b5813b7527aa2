"""Streaming messages: open, write, finish (see :mod:`im_schema.streams`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from im_schema.streams import AppendStreamRequest, FinishStreamRequest, OpenStreamRequest, StreamProgress

from ..contract import route
from ..deps import PrincipalDep, StreamsDep

router = APIRouter(tags=["messages"])


@route(router, OpenStreamRequest)
async def open_stream(body: OpenStreamRequest, streams: StreamsDep, principal: PrincipalDep) -> Response:
    """Store a streaming message (``stream`` is ``"open"``) and answer once it is committed."""
    written = await streams.open(
        principal.user_id,
        principal.device_id,
        to=body.to,
        conversation=body.conversation,
        client_msg_id=body.client_msg_id,
        text=body.text,
        reply_to=body.reply_to,
        mentions=body.mentions,
        mention_all=body.mention_all,
    )
    return Response(written.json, media_type="application/json")


@route(router, AppendStreamRequest)
async def append_stream(body: AppendStreamRequest, streams: StreamsDep, principal: PrincipalDep) -> StreamProgress:
    """Write text at an offset of my open stream (stored before the answer)."""
    return await streams.append(
        principal.user_id, principal.device_id, body.conversation, body.seq, body.offset, body.text
    )


@route(router, FinishStreamRequest)
async def finish_stream(body: FinishStreamRequest, streams: StreamsDep, principal: PrincipalDep) -> Response:
    """Close my stream (finished, or abandoned), after writing a last piece if given."""
    written = await streams.finish(
        principal.user_id,
        principal.device_id,
        body.conversation,
        body.seq,
        offset=body.offset,
        text=body.text,
        abandon=body.abandon,
    )
    return Response(written.json, media_type="application/json")
