"""Which gateway a device should connect to."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.rest import GatewayAssignment

from ..deps import NodeDep, PrincipalDep

router = APIRouter(prefix="/v1", tags=["realtime"])


@router.get("/gateway", response_model=GatewayAssignment)
async def assign_gateway(node: NodeDep, principal: PrincipalDep) -> GatewayAssignment:
    """A live gateway chosen by rendezvous hashing of (user, device): stable while nodes come and go."""
    return node.assign_gateway(principal.user_id, principal.device_id)
