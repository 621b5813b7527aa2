# Generated from im_sdk/_devices.py by tools/unasync.py: edit the source and run the script, not this file.
"""``client.devices``: the devices my account is logged in on, and logging them out.

A device logged out loses its session at once on every server node: its tokens are refused and its
realtime connection is closed (its :meth:`~im_sdk.Client.events` raises
:class:`~im_sdk.AuthenticationError`). When the calling device is among those logged out, the client
forgets its tokens, as :meth:`~im_sdk.Client.logout` does.

The blocking twin (``im_sdk/_sync_devices.py``) is generated from ``im_sdk/_devices.py`` by
``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from im_schema.devices import ListDevicesRequest, LoggedOut, LogoutAllRequest, LogoutDeviceRequest
from im_schema.models import Device

if TYPE_CHECKING:
    from ._sync_client import Client

__all__ = ["Devices"]


class Devices:
    """My logged-in devices."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[Device]:
        """My devices, oldest login first, each with whether it is connected now and which one is this."""
        return self._client.request(ListDevicesRequest()).devices

    def logout(self, device: str) -> LoggedOut:
        """Log one device out (this one too, if named: the client then forgets its tokens)."""
        result = self._client.request(LogoutDeviceRequest(device=device))
        if result.current:
            self._client._state.clear()
        return result

    def logout_all(self) -> LoggedOut:
        """Log every device out, this one included (the client forgets its tokens)."""
        result = self._client.request(LogoutAllRequest())
        if result.current:
            self._client._state.clear()
        return result
