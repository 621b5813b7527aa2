"""The trace ring, its request codec and frame recognition (pure, no I/O)."""

from __future__ import annotations

import orjson
import pytest

from im_schema import UnknownValue
from im_server.bus.nats import parse_heartbeat
from im_server.cluster.trace import TraceRing, _node_trace, decode_request, encode_request, frame_key
from im_server.services.admin import _trace_node
from im_server.services.delivery import ack_frame, message_frame

MESSAGE = b'{"conversation":"d:1:2","seq":42,"sender":1,"client_msg_id":"abcdefgh","sent_at":"x","content":{}}'


def test_frame_key_finds_message_and_ack_frames():
    assert frame_key(message_frame(MESSAGE)) == ("message", ("d:1:2", 42))
    assert frame_key(ack_frame("abcdefgh", MESSAGE)) == ("ack", ("d:1:2", 42))
    group = MESSAGE.replace(b"d:1:2", b"g:7")
    assert frame_key(message_frame(group)) == ("message", ("g:7", 42))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b'{"type":"resync","reason":"x"}',
        b'{"type":"notice","notice":{"conversation":"d:1:2","seq":1}}',
        b'{"type":"message","message":{"conversation":"d:1:2","seq":"1"}}',
        b'{"type":"message","message":{"conversation":"' + b"9" * 100 + b'","seq":1}}',
        b'{"type":"error","code":"x","message":{"conversation":"d:1:2","seq":1}}',
    ],
)
def test_frame_key_ignores_everything_else(frame):
    assert frame_key(frame) is None


def test_ring_is_bounded_and_says_since_when_it_is_complete():
    ring = TraceRing(3, devices=2)
    since = ring.since
    for seq in range(1, 6):
        ring.stored(("d:1:2", seq))
        ring.pushed(("d:1:2", seq), [(2, "a"), (2, "b"), (2, "c")], 3)
    assert len(ring) == 3 and ring.evicted == 2 and ring.since >= since
    assert ring.get(("d:1:2", 1)) is None
    record = ring.get(("d:1:2", 5))
    assert record is not None and record.pushed == 3 and len(record.pushes) == 2
    off = TraceRing(0)
    off.stored(("d:1:2", 1))
    assert len(off) == 0 and off.get(("d:1:2", 1)) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"null",
        b"[]",
        b'{"c":"d:1:2"}',
        b'{"c":"d:1:2","s":"1"}',
        b'{"c":"d:1:2","s":true}',
        b'{"c":"d:1:2","s":-1}',
        b'{"c":"d:1:2","s":1.5}',
        b'{"c":1,"s":1}',
        b'{"c":"' + b"x" * 49 + b'","s":1}',
        b'{"c":"d:1:2","s":' + b"9" * 30 + b"}",
        b"x" * 1000,
    ],
)
def test_hostile_trace_requests_are_ignored(payload):
    assert decode_request(payload) is None


def test_trace_request_round_trip():
    assert decode_request(encode_request("g:7", 2**63 - 1)) == ("g:7", 2**63 - 1)


@pytest.mark.parametrize(
    "answer",
    [b"", b"[]", b'{"node":"x"}', b'{"node":"x","role":"api","record":null,"since":"a","evicted":0,"capacity":1}'],
)
def test_malformed_node_answers_are_dropped(answer):
    assert _node_trace(answer) is None


@pytest.mark.parametrize(
    ("role", "record"),
    [
        ("gateway", {"pushes": [[1]]}),
        ("gateway", {"pushes": [[1, "d", 5, 1]]}),
        ("gateway", {"pushes": [[1, "d", "", 1]]}),
        ("gateway", {"pushes": 5}),
        ("gateway", {"pushed": "many"}),
        ("api", {"published": [1, 2, 3]}),
        ("api", {"published": {"gw-1": "x"}}),
    ],
)
def test_malformed_records_are_dropped(role, record):
    assert _trace_node("n-1", role, record) is None


def test_a_node_is_taken_for_its_registered_role():
    claims = {"stored_at": 1, "published": {"gw-1": 1}, "pushes": [[1, "d", "push", 1]], "pushed": 1}
    gateway = _trace_node("gw-1", "gateway", claims)
    assert gateway is not None and gateway.stored_at is None and gateway.published == {} and gateway.pushed == 1
    api = _trace_node("api-1", "api", claims)
    assert api is not None and api.pushes == [] and api.stored_at is not None


def test_heartbeat_frame_figures_must_be_numbers():
    info = parse_heartbeat(
        "gw-1",
        orjson.dumps({"role": "gateway", "frames_in": 10, "frames_out": True, "frames_in_rate": -1.0}),
    )
    assert info.frames_in == 10.0 and info.frames_out is None and info.frames_in_rate is None
    assert parse_heartbeat("gw-1", b'{"role":"gateway","frames_out_rate":1e300}').frames_out_rate is None


def test_a_push_kind_from_a_newer_node_is_kept_as_unknown():
    found = _trace_node("n-1", "gateway", {"pushes": [[1, "d", "other", 1]]})
    assert found is not None
    assert [(push.user_id, push.kind) for push in found.pushes] == [(1, "other")]
    assert isinstance(found.pushes[0].kind, UnknownValue)
