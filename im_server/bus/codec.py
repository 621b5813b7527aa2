"""What nodes say to each other on the bus (pure, no I/O): the delivery envelope and the typed events.

The events are pydantic models, encoded with :func:`encode_event` and read back with :func:`decode_event`
(which raises ``ValueError`` on anything malformed): :class:`SocialChanged` and :class:`MembersChanged`
between API nodes, :class:`TypingChanged` and :class:`PresenceChanged` from a gateway to the API nodes,
and :class:`SyncRequest`, a batch of ``sync`` frames a gateway asks an API node to answer.

The delivery envelope a gateway node receives on its subject:

One envelope carries several frames, each with the devices on that node that get it. The frames are
already-encoded WebSocket text frames, so the gateway sends the same bytes to every listed connection::

    {"items": [{"to": [[user, "device"], ...], "n": <frame length>}, ...]}\\n<frame 1><frame 2>...

JSON never contains a raw newline in orjson's compact form, so the header ends at the first ``\\n``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, TypeAdapter

from im_schema.frames import FrameId
from im_schema.ids import ConversationId
from im_schema.rest import ConversationsRequest

__all__ = [
    "MAX_SYNC_BATCH",
    "SYNC_AGAIN",
    "BusEvent",
    "Delivery",
    "Ephemeral",
    "MembersChanged",
    "PresenceChanged",
    "SocialChanged",
    "SyncQuery",
    "SyncRequest",
    "TypingChanged",
    "TypingState",
    "decode_delivery",
    "decode_ephemeral",
    "decode_event",
    "encode_delivery",
    "encode_event",
]

E = TypeVar("E", bound="BusEvent")


class BusEvent(BaseModel):
    """A JSON event one node publishes for others; fields a newer node adds are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class SocialChanged(BusEvent):
    """Friendships or blocks of ``users`` changed: other API nodes forget what they cached about them."""

    node: str
    """The API node that made the change (it does not forget its own, fresh, cache)."""
    users: Annotated[list[int], Field(max_length=100_000)]


class MembersChanged(BusEvent):
    """A group conversation's roster changed: other API nodes drop their cached roster."""

    node: str
    conversation: str


class TypingState(BusEvent):
    """What a ``typing`` frame said."""

    conversation: ConversationId
    active: StrictBool = True


class TypingChanged(BusEvent):
    """A device is typing (or stopped); the API node takes user and device from the access token ``t``."""

    t: str
    typing: TypingState


class PresenceChanged(BusEvent):
    """A device connected to (``online``) or left a gateway; ``t`` is its access token (maybe revoked since)."""

    t: str
    online: StrictBool


MAX_SYNC_BATCH = 64
"""The most ``sync`` frames one request to the API carries."""

SYNC_AGAIN = b"again"
"""The answer line for a sync whose page did not fit in the reply (a NATS message is bounded): the gateway
asks again in its next request."""


class SyncQuery(BusEvent):
    """One connection's ``sync`` frame: ``t`` indexes :attr:`SyncRequest.tokens`, ``id`` is the frame's."""

    t: Annotated[int, Field(ge=0, lt=MAX_SYNC_BATCH)]
    id: FrameId
    q: ConversationsRequest


class SyncRequest(BusEvent):
    """``sync`` frames a gateway forwards together; the API answers one frame per line, in order.

    The device of each is the one its access token names (the token the gateway authenticated the
    connection with), never anything else in the request. ``max_bytes`` bounds each answer frame: the
    API lists fewer conversations (``has_more``) rather than answer more.
    """

    tokens: Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=MAX_SYNC_BATCH)]
    syncs: Annotated[list[SyncQuery], Field(min_length=1, max_length=MAX_SYNC_BATCH)]
    max_bytes: Annotated[int, Field(ge=16 * 1024, le=4 * 1024 * 1024)]


Ephemeral = TypingChanged | PresenceChanged
"""What a gateway publishes on the ephemeral subject."""

_ephemeral: TypeAdapter[Ephemeral] = TypeAdapter(Ephemeral)


def encode_event(event: BusEvent) -> bytes:
    """The bytes to publish."""
    return event.model_dump_json().encode()


def decode_event(model: type[E], data: bytes) -> E:
    """Read an event of ``model``; raises ``ValueError`` when malformed."""
    return model.model_validate_json(data)


def decode_ephemeral(data: bytes) -> Ephemeral:
    """Read a typing or presence event; raises ``ValueError`` when malformed."""
    return _ephemeral.validate_json(data)


Recipient = tuple[int, str]
Delivery = tuple[bytes, Sequence[Recipient]]
"""One frame and the devices that get it."""


def encode_delivery(items: Iterable[Delivery]) -> bytes:
    """Pack frames and their recipients into one payload."""
    header: list[dict[str, object]] = []
    frames: list[bytes] = []
    for frame, recipients in items:
        header.append({"to": recipients, "n": len(frame)})
        frames.append(frame)
    return orjson.dumps({"items": header}) + b"\n" + b"".join(frames)


def decode_delivery(payload: bytes) -> list[tuple[bytes, list[Recipient]]]:
    """Unpack :func:`encode_delivery`; raises ``ValueError`` on a malformed payload."""
    end = payload.find(b"\n")
    if end < 0:
        raise ValueError("no header")
    try:
        header = orjson.loads(payload[:end])
        items = header["items"]
        position = end + 1
        result = []
        for item in items:
            size = int(item["n"])
            frame = payload[position : position + size]
            if len(frame) != size:
                raise ValueError("truncated frame")
            position += size
            result.append((frame, [(int(user), str(device)) for user, device in item["to"]]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError("malformed header") from exc
    if position != len(payload):
        raise ValueError("bytes after the last frame")
    return result
