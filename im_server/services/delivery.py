"""Routing committed messages to the gateway nodes that hold their recipients' devices."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import orjson
from pydantic import BaseModel

from im_schema.ids import direct_users

from ..bus.nats import Bus, RegistryMirror
from ..bus.routes import plan_delivery
from ..storage import Written
from .commit import Committed
from .membership import MembershipCache

__all__ = ["Deliverer", "ack_frame", "message_frame", "notice_frame"]

log = logging.getLogger(__name__)


class Deliverer:
    """Encodes each message once and publishes once per gateway node."""

    def __init__(self, bus: Bus, mirror: RegistryMirror, memberships: MembershipCache) -> None:
        self._bus = bus
        self._mirror = mirror
        self._memberships = memberships
        self.publishes = 0

    async def recipients(self, written: Written) -> Iterable[int]:
        """The users a stored message goes to."""
        if written.conversation.startswith("d:"):
            return direct_users(written.conversation)
        return await self._memberships.recipients(written.conversation, written.seq, written.members_version)

    async def __call__(self, committed: Sequence[Committed]) -> None:
        frames = []
        for entry in committed:
            written = entry.written
            skip = (written.sender, entry.device_id) if entry.device_id is not None else None
            frames.append((message_frame(written.json), await self.recipients(written), skip))
        await self._publish(frames)

    async def written(self, written: Written) -> None:
        """Deliver a message the server wrote itself (a group change)."""
        await self._publish([(message_frame(written.json), await self.recipients(written), None)])

    async def notice(self, users: Iterable[int], notice: BaseModel, skip: tuple[int, str] | None = None) -> None:
        """Push a notice to every online device of ``users`` (but ``skip``)."""
        await self._publish([(notice_frame(notice), list(users), skip)])

    async def _publish(self, frames: list[tuple[bytes, Iterable[int], tuple[int, str] | None]]) -> None:
        plan = plan_delivery(frames, self._mirror.routes, self._mirror.nodes)
        self.publishes += await self._bus.publish_deliveries(plan)


def message_frame(message_json: bytes) -> bytes:
    """The ``message`` frame around an already-serialized message."""
    return b'{"type":"message","message":' + message_json + b"}"


def notice_frame(notice: BaseModel) -> bytes:
    """The ``notice`` frame for a notice."""
    return b'{"type":"notice","notice":' + notice.__pydantic_serializer__.to_json(notice) + b"}"


def ack_frame(client_msg_id: str, message_json: bytes) -> bytes:
    """The ``ack`` frame around an already-serialized message."""
    return orjson.dumps({"type": "ack", "client_msg_id": client_msg_id, "message": orjson.Fragment(message_json)})
