"""Tolerant reader: what a newer server sends becomes a value the caller sees, never a failed loop."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from typing import get_args

import pytest
import respx
from pydantic import BaseModel, TypeAdapter, ValidationError

import im_schema
from im_schema._tolerant import MAX_UNKNOWN_LEN, Tolerant
from im_schema.content import TextContent
from im_schema.frames import SERVER_FRAME_TYPES, MessageFrame, NoticeFrame, PongFrame
from im_schema.groups import CreateGroupRequest, Role
from im_schema.social import UpdatePrivacyRequest
from im_sdk import AsyncClient, Client, UnknownValue, _async_client, _sync_client
from im_sdk.errors import InternalServerError
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
    assert {"message", "ack", "error", "notice", "ready", "pong", "resync", "sync"} == SERVER_FRAME_TYPES


# Closed sets (roles, statuses, stream states) from a newer server ---------------------------------

BASE = "http://im.test"
CREATED = "2024-05-01T12:00:00.000Z"


def _user(user_id: int, name: str) -> dict:
    return {"id": user_id, "username": name, "display_name": name.title(), "created_at": CREATED}


def _group(**changes) -> dict:
    return {
        "id": 7,
        "conversation": "g:7",
        "name": "crew",
        "owner": 1,
        "join_policy": "approval",
        "allow_member_invite": False,
        "history_visible": True,
        "muted_all": False,
        "member_count": 2,
        "created_at": CREATED,
        "my_role": "member",
        **changes,
    }


async def _call(result):
    return await result if inspect.isawaitable(result) else result


@pytest.fixture(params=["async", "sync"])
async def client(request):
    made = (AsyncClient if request.param == "async" else Client)(BASE, access_token="access-1")
    yield made
    if isinstance(made, AsyncClient):
        await made.aclose()
    else:
        made.close()


async def test_a_role_a_newer_server_adds_does_not_fail_the_page(client) -> None:
    page = {
        "members": [
            {"user": _user(1, "alice"), "role": "owner", "online": True, "joined_at": CREATED},
            {"user": _user(2, "bob"), "role": "moderator", "online": False, "joined_at": CREATED},
        ],
        "has_more": False,
    }
    with respx.mock(base_url=BASE) as api:
        api.get("/v1/groups/7/members").respond(200, json=page)
        members = (await _call(client.groups.members(7))).members
    assert [member.user.username for member in members] == ["alice", "bob"]
    assert members[0].role == "owner" and not isinstance(members[0].role, UnknownValue)
    assert isinstance(members[1].role, UnknownValue) and members[1].role == "moderator"
    assert repr(members[1].role) == "UnknownValue('moderator')"


async def test_other_closed_sets_of_a_group_read_tolerantly(client) -> None:
    with respx.mock(base_url=BASE) as api:
        api.get("/v1/groups/7").respond(200, json=_group(join_policy="by_link", my_role="moderator"))
        group = await _call(client.groups.info(7))
    assert group.name == "crew"
    assert isinstance(group.join_policy, UnknownValue) and group.join_policy == "by_link"
    assert isinstance(group.my_role, UnknownValue)
    # Written back as the string it was (a client that stores what it read keeps it).
    assert json.loads(group.model_dump_json())["my_role"] == "moderator"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (5, "not a string"),
        ("", "empty"),
        ("x" * (MAX_UNKNOWN_LEN + 1), "too long"),
        (None, "null"),
        (["owner"], "a list"),
    ],
)
async def test_what_is_not_a_plausible_value_still_fails(client, value, why) -> None:
    page = {
        "members": [{"user": _user(2, "bob"), "role": value, "online": False, "joined_at": CREATED}],
        "has_more": False,
    }
    with respx.mock(base_url=BASE) as api:
        api.get("/v1/groups/7/members").respond(200, json=page)
        with pytest.raises(InternalServerError, match="bad_response"):
            await _call(client.groups.members(7))


@pytest.mark.parametrize("module", [_async_client, _sync_client])
def test_a_frame_with_a_new_stream_state_is_delivered(module) -> None:
    message = {
        "conversation": "g:7",
        "seq": 4,
        "sender": 2,
        "client_msg_id": None,
        "sent_at": CREATED,
        "content": {"kind": "text", "text": "thinking"},
        "stream": "paused",
    }
    frame = module._decode(json.dumps({"type": "message", "message": message}))
    assert isinstance(frame, MessageFrame)
    assert frame.message.content == TextContent(text="thinking")
    assert isinstance(frame.message.stream, UnknownValue) and frame.message.stream == "paused"
    notice = {"kind": "stream", "conversation": "g:7", "seq": 4, "sender": 2, "text": "thinking", "state": "paused"}
    frame = module._decode(json.dumps({"type": "notice", "notice": notice}))
    assert isinstance(frame, NoticeFrame) and frame.notice.state == "paused"


def test_what_a_client_sends_stays_strict() -> None:
    # The server refuses values it does not know: the request models keep the closed set.
    with pytest.raises(ValidationError):
        CreateGroupRequest(name="crew", join_policy="by_link")
    with pytest.raises(ValidationError):
        UpdatePrivacyRequest(group_invites="strangers")
    assert TypeAdapter(Role).json_schema() == {"enum": ["owner", "admin", "member"], "type": "string"}


def _tolerant_fields() -> list[tuple[str, str, object]]:
    found = []
    for info in pkgutil.walk_packages(im_schema.__path__, "im_schema."):
        module = importlib.import_module(info.name)
        for model in vars(module).values():
            if isinstance(model, type) and issubclass(model, BaseModel) and model.__module__ == info.name:
                for name, field in model.model_fields.items():
                    annotation = field.rebuild_annotation()
                    if any(isinstance(meta, Tolerant) for meta in _metadata(annotation)):
                        found.append((model.__name__, name, annotation))
    return found


def _metadata(annotation: object) -> list[object]:
    # Tolerant sits on the field's Annotated, or on a branch of ``Annotated[...] | None``.
    metas = list(getattr(annotation, "__metadata__", ()))
    for arg in get_args(annotation):
        metas.extend(getattr(arg, "__metadata__", ()))
    return metas


TOLERANT = _tolerant_fields()


def test_the_closed_sets_the_server_writes_are_tolerant() -> None:
    names = {f"{model}.{field}" for model, field, _ in TOLERANT}
    assert {
        "GroupMember.role",
        "Group.my_role",
        "Group.join_policy",
        "GroupInvitation.status",
        "JoinRequest.status",
        "FriendRequest.status",
        "Message.stream",
        "StreamNotice.state",
        "ClusterNode.state",
    } <= names


@pytest.mark.parametrize(("model", "field", "annotation"), TOLERANT, ids=[f"{m}.{f}" for m, f, _ in TOLERANT])
def test_each_tolerant_field_keeps_a_new_value_and_documents_the_known_ones(model, field, annotation) -> None:
    adapter = TypeAdapter(annotation)
    read = adapter.validate_json(b'"from_the_future"')
    assert isinstance(read, UnknownValue) and read == "from_the_future"
    assert adapter.dump_json(read) == b'"from_the_future"'
    schema = json.dumps(adapter.json_schema())
    assert '"enum"' in schema and "from_the_future" not in schema
    with pytest.raises(ValidationError):
        adapter.validate_json(b"7")
