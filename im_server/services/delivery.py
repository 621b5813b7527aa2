"""Routing committed messages to the gateway nodes that hold their recipients' devices."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import orjson

from im_schema.ids import direct_users

from ..bus.nats import Bus, RegistryMirror
from ..bus.routes import plan_delivery
from .commit import Committed

__all__ = ["Deliverer", "ack_frame", "message_frame"]

log = logging.getLogger(__name__)

MembersOf = Callable[[str], Iterable[int]]


def direct_members(conversation: str) -> Iterable[int]:
    """The two users of a direct conversation, read from its id."""
    return direct_users(conversation)


class Deliverer:
    """Encodes each message once and publishes once per gateway node."""

    def __init__(self, bus: Bus, mirror: RegistryMirror, members_of: MembersOf = direct_members) -> None:
        self._bus = bus
        self._mirror = mirror
        self._members_of = members_of
        self.publishes = 0

    async def __call__(self, committed: Sequence[Committed]) -> None:
        frames = []
        for entry in committed:
            written = entry.written
            frame = message_frame(written.json)
            skip = (written.sender, entry.device_id) if entry.device_id is not None else None
            frames.append((frame, self._members_of(written.conversation), skip))
        plan = plan_delivery(frames, self._mirror.routes, self._mirror.nodes)
        self.publishes += await self._bus.publish_deliveries(plan)


def message_frame(message_json: bytes) -> bytes:
    """The ``message`` frame around an already-serialized message."""
    return b'{"type":"message","message":' + message_json + b"}"


def ack_frame(client_msg_id: str, message_json: bytes) -> bytes:
    """The ``ack`` frame around an already-serialized message."""
    return orjson.dumps({"type": "ack", "client_msg_id": client_msg_id, "message": orjson.Fragment(message_json)})
