"""Property-based tests of the gateway's sans-I/O session: whatever a client sends, it never raises.

Arbitrary bytes, arbitrary JSON and frames that are almost right (a known ``type`` with arbitrary
fields) always give exactly one action: before authentication ``Authenticated`` or ``Close`` (with an
error frame), after it ``Reply`` (a valid server frame), ``Forward``, ``Typing`` or ``Close``. CI runs 100
examples per test; the long run, 5,000 each, is
``HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/server/test_session_fuzz.py --timeout=0``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from im_schema.frames import ErrorFrame, SendFrame, TypingFrame, server_frames
from im_schema.limits import CLOSE_AUTH_FAILED, CLOSE_PROTOCOL_UNSUPPORTED, CLOSE_SESSION_REVOKED
from im_server.gateway.session import Authenticated, Close, Forward, GatewaySession, Reply, Typing
from im_server.services.tokens import TokenCodec

settings.register_profile("long", max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NOW = 1_700_000_000
CODEC = TokenCodec(b"fuzz-signing-key-0123456789")
TOKEN = CODEC.issue(42, "laptop", "session-1", now=NOW, ttl=900)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
"""Any JSON value."""

field_values = st.one_of(
    json_values,
    st.sampled_from(["d:1:2", "g:7", "d:2:1", "abcdefgh12", TOKEN, "text", "image", "\x00", "²", "٣"]),
    st.integers(min_value=0, max_value=2**64),
    st.just({"kind": "text", "text": "hi"}),
    st.just({"kind": "image", "blob": "0" * 64}),
)
"""Values that are sometimes right for a frame's fields."""

almost_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["auth", "ping", "send", "typing", "ready", "ack", "message", "", "AUTH"])},
    optional={
        name: field_values
        for name in (
            "token",
            "protocol",
            "id",
            "to",
            "conversation",
            "client_msg_id",
            "content",
            "reply_to",
            "mentions",
            "mention_all",
            "active",
            "extra",
        )
    },
)
"""Objects with a frame type and arbitrary fields: they reach the validation of each frame."""


def _session(revoked: bool = False) -> GatewaySession:
    return GatewaySession(CODEC, "gw-fuzz", clock=lambda: NOW, revoked=lambda _: revoked)


def _ready() -> GatewaySession:
    session = _session()
    assert isinstance(session.open(json.dumps({"type": "auth", "token": TOKEN})), Authenticated)
    return session


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def _check_open(result: object) -> None:
    assert isinstance(result, Authenticated | Close)
    if isinstance(result, Close):
        assert result.code in {CLOSE_AUTH_FAILED, CLOSE_PROTOCOL_UNSUPPORTED, CLOSE_SESSION_REVOKED}
        assert result.data is not None
        assert isinstance(server_frames.validate_json(result.data), ErrorFrame)


def _check_receive(action: object) -> None:
    assert isinstance(action, Reply | Forward | Typing | Close)
    if isinstance(action, Reply):
        server_frames.validate_json(action.data)  # a valid server frame, whatever came in
    elif isinstance(action, Forward):
        assert isinstance(action.frame, SendFrame)
    elif isinstance(action, Typing):
        assert isinstance(action.frame, TypingFrame)


@given(st.binary(max_size=4096))
def test_first_frame_of_any_bytes(data: bytes) -> None:
    _check_open(_session().open(data))


@given(st.text(max_size=1024))
def test_first_frame_of_any_text(data: str) -> None:
    _check_open(_session().open(data))


@given(json_values | almost_frames)
def test_first_frame_of_any_json(value: Any) -> None:
    _check_open(_session().open(_encode(value)))
    _check_open(_session(revoked=True).open(_encode(value)))


@given(st.binary(max_size=4096))
def test_frames_of_any_bytes_after_auth(data: bytes) -> None:
    _check_receive(_ready().receive(data))


@given(st.text(max_size=1024))
def test_frames_of_any_text_after_auth(data: str) -> None:
    _check_receive(_ready().receive(data))


@given(st.lists(json_values | almost_frames, min_size=1, max_size=8))
def test_runs_of_frames_after_auth(values: list[Any]) -> None:
    session = _ready()
    for value in values:
        _check_receive(session.receive(_encode(value)))
    assert (session.user_id, session.device_id) == (42, "laptop")


def test_integers_too_long_to_print() -> None:
    # Python refuses to turn an integer of more than 4,300 digits into text; no message may try.
    huge = "9" * 5000
    _check_open(_session().open(f'{{"type": "auth", "token": "{TOKEN}", "protocol": {huge}}}'))
    _check_receive(_ready().receive(f'{{"type": "send", "to": {huge}, "client_msg_id": "abcdefgh", "content": 1}}'))
    _check_receive(_ready().receive(f'{{"type": "ping", "id": {huge}}}'))
