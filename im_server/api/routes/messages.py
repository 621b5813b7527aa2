"""Sending messages over HTTP (the WebSocket ``send`` frame is the same operation)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from im_schema.rest import SendMessageRequest

from ..contract import route
from ..deps import MessagingDep, PrincipalDep

router = APIRouter(tags=["messages"])


@route(router, SendMessageRequest)
async def send_message(body: SendMessageRequest, messaging: MessagingDep, principal: PrincipalDep) -> Response:
    """Store a message and answer once it is committed.

    A direct conversation is created by its first message. Sending again with the same
    ``client_msg_id`` returns the stored message instead of storing a second one.
    """
    written = await messaging.send(
        principal.user_id,
        principal.device_id,
        to=body.to,
        conversation=body.conversation,
        client_msg_id=body.client_msg_id,
        content=body.content,
        reply_to=body.reply_to,
        mentions=body.mentions,
        mention_all=body.mention_all,
    )
    return Response(written.json, media_type="application/json")  # serialized once, by the writer
