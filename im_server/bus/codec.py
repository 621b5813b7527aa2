"""The delivery envelope a gateway node receives on its subject (pure, no I/O).

One envelope carries several frames, each with the devices on that node that get it. The frames are
already-encoded WebSocket text frames, so the gateway sends the same bytes to every listed connection::

    {"items": [{"to": [[user, "device"], ...], "n": <frame length>}, ...]}\\n<frame 1><frame 2>...

JSON never contains a raw newline in orjson's compact form, so the header ends at the first ``\\n``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

__all__ = ["Delivery", "decode_delivery", "encode_delivery"]

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
