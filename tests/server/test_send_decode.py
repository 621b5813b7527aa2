"""Forwarded sends are checked by the API with cheap field checks (``Send.decode``), never trusted.

Whatever arrives, the result must be exactly what ``SendFrame`` validation gives: the same send when
the frame is valid, a refusal when it is not. A hostile or broken gateway cannot get past the schema's
bounds by skipping its own validation.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from im_schema.frames import SendFrame
from im_schema.ids import MAX_ID
from im_server.services.messaging import Send

ID = "abcdefgh1234"
TEXT = {"kind": "text", "text": "hello"}


def _frame(**fields: Any) -> dict[str, Any]:
    return {"type": "send", "client_msg_id": ID, "content": TEXT, **fields}


VALID: list[Any] = [
    _frame(to=2),
    _frame(to=MAX_ID),
    _frame(to="Alice"),  # a username, lower-cased by the schema
    _frame(conversation="d:1:2"),
    _frame(conversation="g:7", reply_to=0, mentions=[3, 4], mention_all=True),
    _frame(conversation="g:7", reply_to=5, mentions=[]),
    _frame(to=2, conversation=None, reply_to=None, mentions=[], mention_all=False),
    {"client_msg_id": ID, "content": TEXT, "to": 2},  # the type has a default
    _frame(to=2, content={"kind": "text", "text": "x", "buttons": [{"id": "a", "label": "A"}]}),
    _frame(to=2, content={"kind": "text", "text": "é" * 100}),
    _frame(to=2.0),  # the schema's lax integers
    _frame(to=True),
]

INVALID: list[Any] = [
    None,
    [],
    "send",
    {},
    _frame(),  # no target
    _frame(to=2, conversation="d:1:2"),  # two targets
    _frame(to=0),
    _frame(to=-1),
    _frame(to=MAX_ID + 1),
    _frame(to=[2]),
    _frame(conversation="d:2:1"),  # smaller id first
    _frame(conversation="d:1:1"),
    _frame(conversation="x:1"),
    _frame(conversation="g:" + "9" * 60),
    _frame(conversation=7),
    _frame(to=2, client_msg_id="short"),
    _frame(to=2, client_msg_id="a" * 65),
    _frame(to=2, client_msg_id="has space!"),
    _frame(to=2, client_msg_id=12345678),
    _frame(to=2, reply_to=-1),
    _frame(to=2, reply_to=True),
    _frame(to=2, reply_to="5"),
    _frame(to=2, mentions=[0]),
    _frame(to=2, mentions=[True]),
    _frame(to=2, mentions=["3"]),
    _frame(to=2, mentions=list(range(1, 102))),
    _frame(to=2, mentions=0),
    _frame(to=2, mentions=""),
    _frame(to=2, mention_all=1),
    _frame(to=2, mention_all="yes"),
    _frame(to=2, type="ping"),
    _frame(to=2, extra=1),
    _frame(to=2, content={"kind": "text", "text": ""}),
    _frame(to=2, content={"kind": "text", "text": "a\x00b"}),
    _frame(to=2, content={"kind": "text", "text": "x" * 100_000}),
    _frame(to=2, content={"kind": "text"}),
    _frame(to=2, content={"kind": "system", "event": "x", "actor": 1, "data": {}}),
    _frame(to=2, content={"kind": "text", "text": "x", "buttons": []}),
    _frame(to=2, content="hello"),
    _frame(to=2, content=None),
]


def _fields(send: Send) -> tuple[Any, ...]:
    return (
        send.to,
        send.conversation,
        send.client_msg_id,
        orjson.loads(send.content.__pydantic_serializer__.to_json(send.content)),
        send.reply_to,
        send.mentions,
        send.mention_all,
    )


@pytest.mark.parametrize("raw", VALID)
def test_a_valid_send_decodes_as_the_schema_validates_it(raw: Any) -> None:
    assert _fields(Send.decode(raw)) == _fields(Send.of(SendFrame.model_validate(raw)))


@pytest.mark.parametrize("raw", INVALID)
def test_an_invalid_send_is_refused_as_the_schema_refuses_it(raw: Any) -> None:
    with pytest.raises(ValidationError):
        SendFrame.model_validate(raw)
    with pytest.raises((ValidationError, ValueError, TypeError)):
        Send.decode(raw)


def test_what_the_gateway_forwards_decodes_to_the_frame_it_validated() -> None:
    # The gateway re-encodes each validated frame with its serializer (nulls and defaults included).
    for raw in VALID:
        frame = SendFrame.model_validate(raw)
        forwarded = orjson.loads(frame.__pydantic_serializer__.to_json(frame))
        assert _fields(Send.decode(forwarded)) == _fields(Send.of(frame))
