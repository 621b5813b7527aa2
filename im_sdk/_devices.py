"""``client.devices``: the devices my account is logged in on, and logging them out.

A device logged out loses its session at once on every server node: its tokens are refused and its
realtime connection is closed (its :meth:`~im_sdk.AsyncClient.events` raises
:class:`~im_sdk.AuthenticationError`). When the calling device is among those logged out, the client
forgets its tokens, as :meth:`~im_sdk.AsyncClient.logout` does.

The blocking twin (``im_sdk/_sync_devices.py``) is generated from ``im_sdk/_devices.py`` by
``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from im_schema.devices import ListDevicesRequest, LoggedOut, LogoutAllRequest, LogoutDeviceRequest
from im_schema.models import Device

if TYPE_CHECKING:
    from ._async_client import AsyncClient

__all__ = ["AsyncDevices"]


class AsyncDevices:
    """My logged-in devices."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[Device]:
        """My devices, oldest login first, each with whether it is connected now and which one is this."""
        return (await self._client.request(ListDevicesRequest())).devices

    async def logout(self, device: str) -> LoggedOut:
        """Log one device out (this one too, if named: the client then forgets its tokens)."""
        result = await self._client.request(LogoutDeviceRequest(device=device))
        if result.current:
            self._client._state.clear()
        return result

    async def logout_all(self) -> LoggedOut:
        """Log every device out, this one included (the client forgets its tokens)."""
        result = await self._client.request(LogoutAllRequest())
        if result.current:
            self._client._state.clear()
        return result
