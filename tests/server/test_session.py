"""im_server.gateway.session.GatewaySession: the sans-I/O gateway protocol."""

from __future__ import annotations

import json

import pytest

from im_schema.content import TextContent
from im_schema.frames import ErrorFrame, PongFrame, ReadyFrame, SendFrame, server_frames
from im_schema.limits import CLOSE_AUTH_FAILED, CLOSE_PROTOCOL_UNSUPPORTED, PROTOCOL_VERSION
from im_server.gateway.session import Authenticated, Close, Forward, GatewaySession, Reply
from im_server.services.tokens import TokenCodec

NOW = 1_700_000_000
NODE = "gw-test"


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def codec():
    return TokenCodec(b"test-signing-key-0123456789")


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def session(codec, clock):
    return GatewaySession(codec, NODE, clock=clock)


@pytest.fixture
def token(codec):
    return codec.issue(42, "laptop", "session-1", now=NOW, ttl=900)


@pytest.fixture
def ready_session(session, token):
    assert isinstance(session.open(auth(token)), Authenticated)
    return session


def auth(token, **extra):
    return json.dumps({"type": "auth", "token": token, **extra})


def error_of(data):
    frame = server_frames.validate_json(data)
    assert isinstance(frame, ErrorFrame)
    return frame


def send(**fields):
    return json.dumps(
        {"type": "send", "to": 7, "client_msg_id": "abcdefgh", "content": {"kind": "text", "text": "hi"}, **fields}
    )


# open() -------------------------------------------------------------------------------------------


def test_valid_auth_authenticates(session, token):
    result = session.open(auth(token))
    assert isinstance(result, Authenticated)
    assert (result.user_id, result.device_id, result.session_id) == (42, "laptop", "session-1")
    ready = server_frames.validate_json(result.ready)
    assert ready == ReadyFrame(node_id=NODE, user_id=42, device_id="laptop", protocol=PROTOCOL_VERSION)
    assert (session.user_id, session.device_id) == (42, "laptop")


def test_auth_accepts_bytes_and_an_explicit_protocol(session, token):
    result = session.open(auth(token, protocol=PROTOCOL_VERSION).encode())
    assert isinstance(result, Authenticated)


def test_token_checked_against_the_injected_clock(codec, token):
    assert isinstance(GatewaySession(codec, NODE, clock=Clock(NOW + 899)).open(auth(token)), Authenticated)
    assert isinstance(GatewaySession(codec, NODE, clock=Clock(NOW + 900)).open(auth(token)), Close)


def _refusal(result, close_code, error_code):
    assert isinstance(result, Close)
    assert result.code == close_code
    assert result.data is not None
    frame = error_of(result.data)
    assert frame.code == error_code
    assert frame.message
    return frame


def test_expired_token(session, token, clock):
    clock.now = NOW + 3600
    result = session.open(auth(token))
    _refusal(result, CLOSE_AUTH_FAILED, "token_expired")
    assert session.user_id is None


def test_forged_token(session, token):
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    _refusal(session.open(auth(forged)), CLOSE_AUTH_FAILED, "unauthorized")


def test_token_from_another_cluster(session):
    other = TokenCodec(b"another-cluster-key-000000").issue(42, "laptop", "s", now=NOW, ttl=900)
    _refusal(session.open(auth(other)), CLOSE_AUTH_FAILED, "unauthorized")


@pytest.mark.parametrize("token_value", ["", "garbage", "v1.x.y", "ümlaut"])
def test_garbage_token(session, token_value):
    _refusal(session.open(auth(token_value)), CLOSE_AUTH_FAILED, "unauthorized")


def test_unsupported_protocol(session, token):
    result = session.open(auth(token, protocol=PROTOCOL_VERSION + 1))
    frame = _refusal(result, CLOSE_PROTOCOL_UNSUPPORTED, "unsupported_protocol")
    assert str(PROTOCOL_VERSION + 1) in frame.message
    assert session.user_id is None


def test_protocol_is_checked_before_the_token(session):
    result = session.open(auth("garbage", protocol=99))
    _refusal(result, CLOSE_PROTOCOL_UNSUPPORTED, "unsupported_protocol")


@pytest.mark.parametrize("first", ['{"type": "ping"}', send()])
def test_first_frame_must_be_auth(session, first):
    _refusal(session.open(first), CLOSE_AUTH_FAILED, "unauthorized")


def test_first_frame_not_json(session):
    _refusal(session.open(b"\xff not json"), CLOSE_AUTH_FAILED, "bad_request")


@pytest.mark.parametrize("first", ['{"type": "hello"}', "{}"])
def test_first_frame_of_unknown_type(session, first):
    _refusal(session.open(first), CLOSE_AUTH_FAILED, "unknown_frame")


@pytest.mark.parametrize("first", ['{"type": "auth"}', '{"type": "auth", "token": "t", "x": 1}', "[1]", "3"])
def test_first_frame_malformed(session, first):
    _refusal(session.open(first), CLOSE_AUTH_FAILED, "bad_request")


# receive() ----------------------------------------------------------------------------------------


def test_ping_gets_pong(ready_session):
    result = ready_session.receive('{"type": "ping", "id": "p-1"}')
    assert isinstance(result, Reply)
    assert server_frames.validate_json(result.data) == PongFrame(id="p-1")


def test_ping_without_id(ready_session):
    result = ready_session.receive(b'{"type": "ping"}')
    assert isinstance(result, Reply)
    assert json.loads(result.data) == {"type": "pong"}


def test_send_is_forwarded(ready_session):
    raw = send()
    result = ready_session.receive(raw)
    assert isinstance(result, Forward)
    assert result.frame == SendFrame(to=7, client_msg_id="abcdefgh", content=TextContent(text="hi"))
    assert result.raw == raw.encode()


def test_send_into_a_conversation_is_forwarded(ready_session):
    result = ready_session.receive(send(to=None, conversation="g:3"))
    assert isinstance(result, Forward)
    assert result.frame.conversation == "g:3"


def test_malformed_json(ready_session):
    result = ready_session.receive("{nope")
    assert isinstance(result, Reply)
    assert error_of(result.data).code == "bad_request"


@pytest.mark.parametrize("data", ['{"type": "teleport"}', '{"type": "message"}', '{"no_type": 1}'])
def test_unknown_type(ready_session, data):
    result = ready_session.receive(data)
    assert isinstance(result, Reply)
    assert error_of(result.data).code == "unknown_frame"


def test_invalid_send_names_its_client_msg_id(ready_session):
    result = ready_session.receive(send(content={"kind": "text", "text": ""}))
    assert isinstance(result, Reply)
    frame = error_of(result.data)
    assert frame.code == "bad_request"
    assert frame.client_msg_id == "abcdefgh"
    assert "content" in frame.message


def test_send_with_both_targets_is_refused(ready_session):
    result = ready_session.receive(send(conversation="d:1:7"))
    assert isinstance(result, Reply)
    frame = error_of(result.data)
    assert frame.code == "bad_request"
    assert frame.client_msg_id == "abcdefgh"


def test_error_client_msg_id_is_truncated(ready_session):
    result = ready_session.receive(send(client_msg_id="x" * 500))
    frame = error_of(result.data)
    assert frame.client_msg_id == "x" * 64


@pytest.mark.parametrize("data", ["[]", "null", '"ping"', "42"])
def test_non_object_frames(ready_session, data):
    result = ready_session.receive(data)
    assert isinstance(result, Reply)
    frame = error_of(result.data)
    assert frame.code == "bad_request"
    assert frame.client_msg_id is None


def test_error_messages_are_bounded(ready_session):
    result = ready_session.receive(send(to="x" * 5000))
    frame = error_of(result.data)
    assert len(frame.message) <= 300


def test_second_auth_is_a_bad_request(ready_session, token):
    result = ready_session.receive(auth(token))
    assert isinstance(result, Reply)
    assert error_of(result.data).code == "bad_request"
    assert ready_session.user_id == 42


def test_text_frames_encoded_by_the_gateway_are_what_websockets_writes():
    from websockets.frames import Frame, Opcode

    from im_server.gateway.node import _payload, text_frame

    for size in (0, 1, 125, 126, 65535, 65536, 70000):
        payload = b"x" * size
        encoded = text_frame(payload)
        assert encoded == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
        assert _payload(encoded) == payload


def test_a_sync_frame_is_handed_on_and_a_bad_one_answered_with_its_id(ready_session):
    from im_schema.frames import SyncFrame
    from im_server.gateway.session import Sync

    action = ready_session.receive(json.dumps({"type": "sync", "id": "s1", "since": "12:d:1:2", "recent": 20}))
    assert action == Sync(SyncFrame(id="s1", since="12:d:1:2", limit=200, recent=20))
    for bad in ({"limit": 0}, {"limit": "9"}, {"recent": 51}, {"since": "a b"}, {"user_id": 7}):
        action = ready_session.receive(json.dumps({"type": "sync", "id": "s2", **bad}))
        assert isinstance(action, Reply)
        error = error_of(action.data)
        assert (error.code, error.id, error.client_msg_id) == ("bad_request", "s2", None), bad


def test_a_sync_before_auth_closes(session):
    outcome = session.open(json.dumps({"type": "sync", "id": "s1"}))
    assert isinstance(outcome, Close) and outcome.code == CLOSE_AUTH_FAILED


@pytest.mark.parametrize(
    ("data", "ids"),
    [
        ('{"type":"sync","id":"s1"}', {"id": "s1"}),
        (b'{"type":"send","client_msg_id":"m1","to":2}', {"client_msg_id": "m1"}),
        ('{"type":"sync","id":"' + "x" * 100 + '"}', {"id": "x" * 64}),
        ('{"type":"sync","id":7}', {}),
        ('{"type":"ping","id":"p"}', {}),
        ('{"type":"sync","id":"s1"', {}),
        ("[1, 2]", {}),
        ("\xff", {}),
    ],
)
def test_a_frame_refused_for_the_rate_is_answered_with_the_ids_it_names(session, data, ids):
    answer = json.loads(session.slow_down(data, 0.25))
    assert answer["type"] == "error" and answer["code"] == "rate_limited" and answer["retry_after"] == 0.25
    assert {key: answer[key] for key in ("id", "client_msg_id") if key in answer} == ids
