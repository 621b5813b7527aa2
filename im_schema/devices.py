"""A user's logged-in devices: listing them and logging them out.

Logging a device out ends its session at once on every node: its access tokens are refused by every
API node and gateway, its refresh token stops working, and its live connections are closed with
:data:`~im_schema.limits.CLOSE_SESSION_REVOKED`.
"""

from __future__ import annotations

from pydantic import BaseModel

from .ids import DeviceId
from .models import Device
from .rest import Endpoint, Request

__all__ = [
    "DeviceList",
    "ListDevicesRequest",
    "LoggedOut",
    "LogoutAllRequest",
    "LogoutDeviceRequest",
]


class DeviceList(BaseModel):
    """My logged-in devices, the oldest login first."""

    devices: list[Device]


class LoggedOut(BaseModel):
    """Which devices were logged out."""

    devices: list[DeviceId]
    current: bool
    """The calling device was one of them: its tokens no longer work."""


class ListDevicesRequest(Request[DeviceList]):
    """My logged-in devices, with whether each is connected now."""

    endpoint = Endpoint("GET", "/v1/devices", DeviceList)


class LogoutDeviceRequest(Request[LoggedOut]):
    """Log one of my devices out (this one too, if named)."""

    endpoint = Endpoint("DELETE", "/v1/devices/{device}", LoggedOut)

    device: DeviceId


class LogoutAllRequest(Request[LoggedOut]):
    """Log all my devices out, this one included."""

    endpoint = Endpoint("DELETE", "/v1/devices", LoggedOut)
