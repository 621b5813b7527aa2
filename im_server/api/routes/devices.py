"""My devices: list them, log one or all of them out."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.devices import DeviceList, LoggedOut, LogoutDeviceRequest

from ..deps import NodeDep, PrincipalDep, parse

router = APIRouter(prefix="/v1", tags=["devices"])


@router.get("/devices", response_model=DeviceList)
async def list_devices(node: NodeDep, principal: PrincipalDep) -> DeviceList:
    """My logged-in devices, oldest login first, with whether each is connected now."""
    return await node.devices.list(principal)


@router.delete("/devices/{device}", response_model=LoggedOut)
async def logout_device(device: str, node: NodeDep, principal: PrincipalDep) -> LoggedOut:
    """Log one device out: its tokens are refused everywhere and its connections closed (4012)."""
    request = parse(LogoutDeviceRequest, device=device)
    return await node.devices.logout(principal, request.device)


@router.delete("/devices", response_model=LoggedOut)
async def logout_all(node: NodeDep, principal: PrincipalDep) -> LoggedOut:
    """Log every device out, this one included."""
    return await node.devices.logout(principal, None)
