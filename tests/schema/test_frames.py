"""im_schema.frames (the WebSocket unions) and im_schema.rest (request models naming their endpoints)."""

from __future__ import annotations

import inspect
import json

import pytest
from pydantic import BaseModel, ValidationError

from im_schema import rest
from im_schema.content import TextContent
from im_schema.frames import (
    AckFrame,
    AuthFrame,
    ErrorFrame,
    MessageFrame,
    PingFrame,
    PongFrame,
    ReadyFrame,
    SendFrame,
    client_frames,
    server_frames,
)
from im_schema.limits import PROTOCOL_VERSION
from im_schema.models import Message
from im_schema.rest import (
    ConversationsRequest,
    Endpoint,
    GetUserRequest,
    HistoryRequest,
    LoginRequest,
    MarkReadRequest,
    MessagePage,
    Request,
    SendMessageRequest,
    WhoAmIRequest,
)

MESSAGE = {
    "conversation": "d:1:2",
    "seq": 5,
    "sender": 1,
    "client_msg_id": "abcdefgh",
    "sent_at": "2024-05-01T12:00:00Z",
    "content": {"kind": "text", "text": "hi"},
}


def _errors(exc_info):
    return [(error["type"], error["loc"]) for error in exc_info.value.errors()]


# Client frames ------------------------------------------------------------------------------------


def test_decode_auth():
    frame = client_frames.validate_json('{"type": "auth", "token": "t0k"}')
    assert frame == AuthFrame(token="t0k", protocol=PROTOCOL_VERSION)


def test_decode_auth_with_protocol():
    frame = client_frames.validate_json('{"type": "auth", "token": "t", "protocol": 7}')
    assert isinstance(frame, AuthFrame)
    assert frame.protocol == 7


@pytest.mark.parametrize(("data", "ping_id"), [('{"type": "ping"}', None), ('{"type": "ping", "id": "p1"}', "p1")])
def test_decode_ping(data, ping_id):
    frame = client_frames.validate_json(data)
    assert frame == PingFrame(id=ping_id)


def test_decode_send_to_user():
    data = {"type": "send", "to": 2, "client_msg_id": "abcdefgh", "content": {"kind": "text", "text": "hi"}}
    frame = client_frames.validate_json(json.dumps(data))
    assert isinstance(frame, SendFrame)
    assert frame.to == 2
    assert frame.conversation is None
    assert frame.content == TextContent(text="hi")


def test_decode_send_to_username_lowercases_it():
    data = {
        "type": "send",
        "to": "Bob",
        "client_msg_id": "abcdefgh",
        "content": {"kind": "text", "text": "x"},
    }
    frame = client_frames.validate_python(data)
    assert frame.to == "bob"


def test_decode_send_to_conversation():
    data = {
        "type": "send",
        "conversation": "g:9",
        "client_msg_id": "abcdefgh",
        "content": {"kind": "text", "text": "x"},
    }
    frame = client_frames.validate_python(data)
    assert isinstance(frame, SendFrame)
    assert (frame.to, frame.conversation) == (None, "g:9")


@pytest.mark.parametrize(
    "targets",
    [{}, {"to": 2, "conversation": "d:1:2"}, {"to": None, "conversation": None}],
    ids=["neither", "both", "both-null"],
)
def test_send_needs_exactly_one_target(targets):
    data = {"type": "send", "client_msg_id": "abcdefgh", "content": {"kind": "text", "text": "x"}, **targets}
    with pytest.raises(ValidationError, match="exactly one of 'to' and 'conversation'"):
        client_frames.validate_python(data)


def test_send_refuses_system_content():
    data = {
        "type": "send",
        "to": 2,
        "client_msg_id": "abcdefgh",
        "content": {"kind": "system", "event": "member_joined"},
    }
    with pytest.raises(ValidationError):
        client_frames.validate_python(data)


def test_send_refuses_empty_text():
    data = {"type": "send", "to": 2, "client_msg_id": "abcdefgh", "content": {"kind": "text", "text": ""}}
    with pytest.raises(ValidationError):
        client_frames.validate_python(data)


@pytest.mark.parametrize("kind", ["ready", "message", "pong", "nope", ""])
def test_unknown_client_frame_type_is_a_union_tag_error(kind):
    with pytest.raises(ValidationError) as info:
        client_frames.validate_json(json.dumps({"type": kind}))
    assert _errors(info) == [("union_tag_invalid", ())]


def test_missing_type_is_a_union_tag_error():
    with pytest.raises(ValidationError) as info:
        client_frames.validate_json('{"token": "t"}')
    assert _errors(info) == [("union_tag_not_found", ())]


@pytest.mark.parametrize(
    "data",
    [
        {"type": "auth", "token": "t", "extra": 1},
        {"type": "ping", "id": "p", "user_id": 1},
        {
            "type": "send",
            "to": 2,
            "client_msg_id": "abcdefgh",
            "content": {"kind": "text", "text": "x"},
            "z": 0,
        },
    ],
)
def test_extra_fields_are_forbidden_in_client_frames(data):
    with pytest.raises(ValidationError) as info:
        client_frames.validate_python(data)
    assert [error["type"] for error in info.value.errors()] == ["extra_forbidden"]


def test_frames_are_frozen():
    frame = PingFrame(id="a")
    with pytest.raises(ValidationError):
        frame.id = "b"


def test_oversized_token_is_rejected():
    with pytest.raises(ValidationError):
        client_frames.validate_python({"type": "auth", "token": "x" * 2049})


# Server frames ------------------------------------------------------------------------------------


def test_decode_ready():
    frame = server_frames.validate_json('{"type": "ready", "node_id": "gw-1", "user_id": 3, "device_id": "cli"}')
    assert frame == ReadyFrame(node_id="gw-1", user_id=3, device_id="cli", protocol=PROTOCOL_VERSION)


def test_decode_message():
    frame = server_frames.validate_json(json.dumps({"type": "message", "message": MESSAGE}))
    assert isinstance(frame, MessageFrame)
    assert frame.message == Message.model_validate(MESSAGE)
    assert frame.message.content == TextContent(text="hi")


def test_decode_ack():
    frame = server_frames.validate_json(json.dumps({"type": "ack", "client_msg_id": "abcdefgh", "message": MESSAGE}))
    assert isinstance(frame, AckFrame)
    assert frame.message.seq == 5


def test_decode_error():
    frame = server_frames.validate_json(
        '{"type": "error", "code": "rate_limited", "message": "slow", "retry_after": 1.5}'
    )
    assert frame == ErrorFrame(code="rate_limited", message="slow", retry_after=1.5)
    assert frame.client_msg_id is None


def test_decode_error_with_a_code_this_sdk_does_not_know():
    frame = server_frames.validate_json('{"type": "error", "code": "brand_new", "message": "?"}')
    assert isinstance(frame, ErrorFrame)
    assert frame.code == "brand_new"


def test_decode_pong():
    assert server_frames.validate_json('{"type": "pong", "id": "p1"}') == PongFrame(id="p1")


@pytest.mark.parametrize("kind", ["auth", "send", "ping", "typing"])
def test_unknown_server_frame_type_is_a_union_tag_error(kind):
    with pytest.raises(ValidationError) as info:
        server_frames.validate_json(json.dumps({"type": kind}))
    assert _errors(info) == [("union_tag_invalid", ())]


def test_extra_fields_are_forbidden_in_server_frames():
    with pytest.raises(ValidationError) as info:
        server_frames.validate_python({"type": "pong", "id": None, "extra": True})
    assert [error["type"] for error in info.value.errors()] == ["extra_forbidden"]


@pytest.mark.parametrize(
    "frame",
    [
        AuthFrame(token="t"),
        PingFrame(id="x"),
        SendFrame(to="bob", client_msg_id="abcdefgh", content=TextContent(text="héllo ✓")),
        SendFrame(conversation="d:1:2", client_msg_id="abcdefgh", content=TextContent(text="x")),
    ],
)
def test_client_frames_roundtrip(frame):
    assert client_frames.validate_json(frame.model_dump_json()) == frame


@pytest.mark.parametrize(
    "frame",
    [
        ReadyFrame(node_id="gw", user_id=1, device_id="d"),
        MessageFrame(message=Message.model_validate(MESSAGE)),
        AckFrame(client_msg_id="abcdefgh", message=Message.model_validate(MESSAGE)),
        ErrorFrame(code="bad_request", message="no", client_msg_id="abcdefgh"),
        PongFrame(),
    ],
)
def test_server_frames_roundtrip(frame):
    assert server_frames.validate_json(frame.model_dump_json()) == frame


# REST request models ------------------------------------------------------------------------------


def test_endpoint_parses_path_params():
    assert Endpoint("GET", "/v1/x", rest.Ok).path_params == ()
    assert Endpoint("GET", "/v1/users/{user}", rest.Ok).path_params == ("user",)
    assert Endpoint("POST", "/v1/{a}/b/{c}", rest.Ok).path_params == ("a", "c")


def test_path_fills_path_params():
    request = HistoryRequest(conversation="d:1:2", after=3)
    assert request.path() == "/v1/conversations/d:1:2/messages"
    assert GetUserRequest(user=7).path() == "/v1/users/7"
    assert GetUserRequest(user="Carol").path() == "/v1/users/carol"
    assert WhoAmIRequest().path() == "/v1/me"


def test_payload_excludes_path_params_and_none():
    request = HistoryRequest(conversation="d:1:2", after=3)
    assert request.payload() == {"after": 3, "limit": 100}
    assert MarkReadRequest(conversation="g:5", seq=9).payload() == {"seq": 9}
    assert GetUserRequest(user=7).payload() == {}
    assert ConversationsRequest().payload() == {"limit": 200}
    assert ConversationsRequest(since="c1", limit=5, recent=3).payload() == {"since": "c1", "limit": 5, "recent": 3}


def test_payload_is_json_ready():
    request = SendMessageRequest(to="bob", client_msg_id="abcdefgh", content=TextContent(text="hi"))
    payload = request.payload()
    assert payload == {
        "to": "bob",
        "client_msg_id": "abcdefgh",
        "content": {"kind": "text", "text": "hi"},
        "mentions": [],
        "mention_all": False,
    }
    assert json.loads(json.dumps(payload)) == payload


def test_login_defaults_the_device():
    assert LoginRequest(username="alice", password="pw").payload() == {
        "username": "alice",
        "password": "pw",
        "device": "default",
    }


@pytest.mark.parametrize(
    "targets",
    [{}, {"to": 2, "conversation": "d:1:2"}],
    ids=["neither", "both"],
)
def test_send_message_request_needs_exactly_one_target(targets):
    with pytest.raises(ValidationError, match="exactly one of 'to' and 'conversation'"):
        SendMessageRequest(client_msg_id="abcdefgh", content=TextContent(text="x"), **targets)


def test_requests_forbid_extra_fields():
    with pytest.raises(ValidationError):
        HistoryRequest(conversation="d:1:2", bogus=1)


def test_history_limit_is_bounded():
    with pytest.raises(ValidationError):
        HistoryRequest(conversation="d:1:2", limit=0)
    with pytest.raises(ValidationError):
        HistoryRequest(conversation="d:1:2", limit=1001)


def _request_models():
    return [
        obj
        for _, obj in inspect.getmembers(rest, inspect.isclass)
        # pydantic also registers parametrized bases such as ``Request[Ok]`` in the module.
        if issubclass(obj, Request) and obj.__pydantic_generic_metadata__["origin"] is None and obj is not Request
    ]


def test_every_request_model_names_an_endpoint_with_a_model_response():
    models = _request_models()
    assert {model.__name__ for model in models} == {
        "ConversationsRequest",
        "GatewayRequest",
        "GetUserRequest",
        "HistoryRequest",
        "LoginRequest",
        "LogoutRequest",
        "MarkReadRequest",
        "RefreshRequest",
        "RegisterRequest",
        "SendMessageRequest",
        "WhoAmIRequest",
    }
    for model in models:
        endpoint = model.endpoint
        assert isinstance(endpoint, Endpoint), model
        assert endpoint.path.startswith("/v1/"), model
        assert issubclass(endpoint.response, BaseModel), model
        # Every path parameter is a field of the model.
        assert set(endpoint.path_params) <= set(model.model_fields), model


def test_response_model_matches_the_generic_parameter():
    for model in _request_models():
        (base,) = [
            base
            for base in model.__mro__
            if getattr(base, "__pydantic_generic_metadata__", {}).get("origin") is Request
        ]
        (argument,) = base.__pydantic_generic_metadata__["args"]
        assert model.endpoint.response is argument, model


def test_history_answers_with_a_message_page():
    assert HistoryRequest.endpoint.response is MessagePage
    assert HistoryRequest.endpoint.method == "GET"


def test_a_content_kind_from_a_newer_server_is_kept_not_refused():
    from im_schema.content import UnknownContent
    from im_schema.models import Message

    raw = (
        b'{"conversation":"d:1:2","seq":3,"sender":1,"sent_at":"2026-01-01T00:00:00.000Z",'
        b'"content":{"kind":"hologram","frames":3}}'
    )
    message = Message.model_validate_json(raw)
    assert isinstance(message.content, UnknownContent)
    assert message.content.kind == "hologram"
    assert message.model_dump(mode="json")["content"] == {"kind": "hologram", "frames": 3}
