"""What a gateway forwards for a send is the frame it validated, and the API reads back that same frame.

The gateway re-encodes each validated frame with the model's serializer (nulls and defaults included, which
is cheaper than leaving them out); the API validates every forwarded send again with the same schema.
"""

from __future__ import annotations

from typing import Any

import pytest

from im_schema.frames import SendFrame

ID = "abcdefgh1234"
TEXT = {"kind": "text", "text": "hello"}


def _frame(**fields: Any) -> dict[str, Any]:
    return {"type": "send", "client_msg_id": ID, "content": TEXT, **fields}


@pytest.mark.parametrize(
    "raw",
    [
        _frame(to=2),
        _frame(to="Alice"),
        _frame(conversation="d:1:2"),
        _frame(conversation="g:7", reply_to=0, mentions=[3, 4], mention_all=True),
        _frame(to=2, content={"kind": "text", "text": "x", "buttons": [{"id": "a", "label": "A"}]}),
        _frame(to=2, content={"kind": "text", "text": "é \\" + '"' + "\n" * 3}),
    ],
)
def test_the_forwarded_encoding_validates_back_to_the_same_frame(raw: dict[str, Any]) -> None:
    frame = SendFrame.model_validate(raw)
    forwarded = frame.__pydantic_serializer__.to_json(frame)
    assert SendFrame.model_validate_json(forwarded) == frame
