"""My devices: list them, log one or all of them out."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.devices import DeviceList, ListDevicesRequest, LoggedOut, LogoutAllRequest, LogoutDeviceRequest

from ..contract import route
from ..deps import DeviceDep, PrincipalDep

router = APIRouter(tags=["devices"])


@route(router, ListDevicesRequest)
async def list_devices(_: ListDevicesRequest, devices: DeviceDep, principal: PrincipalDep) -> DeviceList:
    """My logged-in devices, oldest login first, with whether each is connected now."""
    return await devices.list(principal)


@route(router, LogoutDeviceRequest)
async def logout_device(request: LogoutDeviceRequest, devices: DeviceDep, principal: PrincipalDep) -> LoggedOut:
    """Log one device out: its tokens are refused everywhere and its connections closed (4012)."""
    return await devices.logout(principal, request.device)


@route(router, LogoutAllRequest)
async def logout_all(_: LogoutAllRequest, devices: DeviceDep, principal: PrincipalDep) -> LoggedOut:
    """Log every device out, this one included."""
    return await devices.logout(principal, None)
