"""Which gateway a device should connect to."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.rest import GatewayAssignment, GatewayRequest

from ..contract import route
from ..deps import NodeDep, PrincipalDep

router = APIRouter(tags=["realtime"])


@route(router, GatewayRequest)
async def assign_gateway(body: GatewayRequest, node: NodeDep, principal: PrincipalDep) -> GatewayAssignment:
    """A live gateway chosen by rendezvous hashing of (user, device): stable while nodes come and go.

    ``avoid`` names a gateway the device just lost: another is chosen if any other is live.
    """
    return node.assign_gateway(principal.user_id, principal.device_id, avoid=body.avoid)
