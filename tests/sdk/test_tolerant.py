"""Tolerant reader: what a newer server sends becomes a value the caller sees, never a failed loop."""

from __future__ import annotations

import json

import pytest

from im_schema.frames import SERVER_FRAME_TYPES, PongFrame
from im_sdk import _async_client, _sync_client
from im_sdk.events import UnknownEvent, to_event


@pytest.mark.parametrize("module", [_async_client, _sync_client])
def test_a_frame_of_a_new_type_is_an_unknown_event(module) -> None:
    raw = {"type": "stream_chunk", "conversation": "g:1", "delta": "hé"}
    frame = module._decode(json.dumps(raw))
    assert frame == UnknownEvent("stream_chunk", raw)
    assert to_event(frame, client=None) is frame  # yielded by events() as it is


@pytest.mark.parametrize("module", [_async_client, _sync_client])
@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe not json",
        b"[1, 2]",
        b'"pong"',
        b"{}",
        b'{"type": 7}',
        b'{"type": null}',
        b'{"type": "message"}',  # a known type that does not validate: skipped, not passed off as unknown
        b'{"type": "pong", "id": {"nested": []}}',
        b"{" * 5000,
    ],
)
def test_an_unreadable_frame_is_skipped(module, data: bytes) -> None:
    assert module._decode(data) is None


def test_known_frames_still_decode() -> None:
    assert _async_client._decode(b'{"type": "pong", "id": "1"}') == PongFrame(id="1")
    assert {"message", "ack", "error", "notice", "ready", "pong", "resync"} == SERVER_FRAME_TYPES
