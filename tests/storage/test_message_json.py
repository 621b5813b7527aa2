"""The storage layer writes a message's JSON by hand (it is on the send path); it must read back as the
shared schema's Message, every optional field included, so that the two never drift apart."""

from __future__ import annotations

import itertools

import orjson
import pytest

from im_schema.models import Message
from im_server.storage.messages import message_json

REPLY = {"seq": 3, "sender": 2, "preview": "hi"}
SENT_AT = "2026-01-02T03:04:05.678Z"


@pytest.mark.parametrize(
    ("reply", "mentions", "everyone", "edited", "client_msg_id", "stream"),
    list(
        itertools.product(
            (None, REPLY), ([], [2, 3]), (False, True), (None, 1_767_225_600_000), (None, "abcdefgh"), (None, "open")
        )
    ),
)
def test_stored_json_reads_as_the_schema_writes_it(reply, mentions, everyone, edited, client_msg_id, stream) -> None:
    meta = {"mentions": mentions, "all": everyone}
    if stream is not None:
        meta["stream"] = stream
    if reply is not None:
        meta["reply"] = reply
    if edited is not None:
        meta["edited_at"] = edited
    body = orjson.dumps({"kind": "text", "text": "hello"})
    data = message_json("g:1", 7, 2, client_msg_id, SENT_AT, body, meta)
    message = Message.model_validate_json(data)
    assert message.reply_to is None if reply is None else message.reply_to.model_dump() == reply
    assert message.mentions == mentions and message.mention_all is everyone
    assert (message.edited_at is None) is (edited is None)
    assert message.stream == stream
    # Every field the storage layer writes is one the schema has, and the schema adds nothing but defaults.
    written = orjson.loads(data)
    schema = orjson.loads(message.model_dump_json())
    assert set(written) <= set(Message.model_fields)
    assert {key: schema[key] for key in written} == {**written, "sent_at": schema["sent_at"]}
    assert {key: value for key, value in schema.items() if key not in written} == {
        key: Message.model_fields[key].get_default(call_default_factory=True)
        for key in set(Message.model_fields) - set(written)
    }


def test_timestamps_are_formatted_as_the_schema_formats_them() -> None:
    # The formatted second is reused while it does not change: the text must be the same as formatting anew.
    import random

    from im_schema.models import format_timestamp
    from im_server.storage._util import ms_to_datetime
    from im_server.storage.message_rows import _timestamp

    rng = random.Random(14)
    values = [0, 1, 999, 1000, 1001, -1, -1000, -1001, 253_402_214_399_999]
    values += list(range(1_700_000_000_990, 1_700_000_001_010))  # across a second, in order
    values += [rng.randrange(0, 5_000_000_000_000) for _ in range(2000)]
    for ms in values:
        assert _timestamp(ms) == format_timestamp(ms_to_datetime(ms)), ms
