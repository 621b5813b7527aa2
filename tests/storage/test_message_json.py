"""The storage layer writes a message's JSON itself (it is on the send path, and history pages are sent on
as stored). Its bytes must be exactly what the shared schema's writer makes of the same message, for every
content kind and every optional field, so that the two never drift apart."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from im_schema._tagged import UNKNOWN, tags_of
from im_schema.content import (
    Content,
    FileContent,
    ImageContent,
    Preview,
    RecalledContent,
    SystemContent,
    SystemEvent,
    TextContent,
    UnknownContent,
    VideoContent,
    VoiceContent,
)
from im_schema.frames import AckFrame, MessageFrame, server_frames
from im_schema.models import Message, ReplyPreview
from im_server.services.delivery import ack_frame, message_frame
from im_server.storage.message_rows import _written
from im_server.storage.messages import message_json

REPLY = {"seq": 3, "sender": 2, "preview": "hi"}
SENT_AT = "2026-01-02T03:04:05.678Z"

_ids = st.integers(min_value=1, max_value=2**53 - 1)
_small = st.integers(min_value=0, max_value=2**31)
_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
_blob = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
# 1970 .. 2106: stored times are read as float seconds, exact to the millisecond up to 2**32 s (messages are
# stamped with the time they are written).
_ms = st.integers(min_value=0, max_value=2**32 * 1000)


def _moment(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


_preview = st.builds(Preview, blob=_blob, media_type=_text, width=_small, height=_small, size=_small)
_buttons = st.lists(
    st.tuples(st.from_regex(r"\A[a-z0-9_]{1,16}\Z"), st.text(alphabet="abc xyz!", min_size=1, max_size=10)),
    min_size=1,
    max_size=3,
    unique_by=lambda button: button[0],
)
_media = {"blob": _blob, "name": _text, "size": _small, "media_type": _text, "caption": st.none() | _text}
_by_kind = {
    "text": st.builds(
        lambda text, buttons: TextContent.model_validate(
            {"text": text, **({"buttons": [{"id": i, "label": label} for i, label in buttons]} if buttons else {})}
        ),
        _text.filter(bool),
        st.none() | _buttons,
    ),
    "system": st.builds(
        SystemContent,
        event=st.sampled_from(list(SystemEvent)).map(str) | _text,
        actor=st.none() | _ids,
        data=st.dictionaries(st.sampled_from(["user", "users", "name", "until"]), _small | _text | st.lists(_ids)),
    ),
    "recalled": st.builds(RecalledContent, by=_ids),
    "image": st.builds(ImageContent, **_media, width=_small, height=_small, thumbnail=_preview),
    "file": st.builds(FileContent, **_media),
    "voice": st.builds(VoiceContent, **_media, duration_ms=_small),
    "video": st.builds(
        VideoContent,
        **_media,
        duration_ms=_small,
        width=st.none() | _small,
        height=st.none() | _small,
        poster=st.none() | _preview,
    ),
    # A kind from a newer server: kept whole.
    UNKNOWN: st.builds(
        lambda extra: UnknownContent.model_validate({"kind": "poll", **extra}), st.dictionaries(_text, _small)
    ),
}
_contents = st.one_of(*_by_kind.values())


def test_every_content_kind_is_generated() -> None:
    assert set(_by_kind) == {*tags_of(Content), UNKNOWN}


@st.composite
def _messages(draw: st.DrawFn) -> tuple[Message, SimpleNamespace]:
    """A message, and the stored row it would be read from (as the message transactions write it)."""
    direct = draw(st.booleans())
    if direct:
        a, b = sorted(draw(st.lists(_ids, min_size=2, max_size=2, unique=True)))
        conversation = f"d:{a}:{b}"
    else:
        conversation = f"g:{draw(_ids)}"
    content = draw(_contents)
    sent_ms, edited_ms = draw(_ms), draw(st.none() | _ms)
    reply = draw(st.none() | st.builds(ReplyPreview, seq=_ids, sender=_ids, preview=_text))
    mentions = sorted(set(draw(st.lists(_ids, max_size=4))))
    mention_all = draw(st.booleans())
    stream = draw(st.sampled_from([None, "open", "finished", "abandoned"]))
    message = Message(
        conversation=conversation,
        seq=draw(_ids),
        sender=draw(_ids),
        client_msg_id=draw(st.none() | st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z")),
        sent_at=_moment(sent_ms),
        content=content,
        reply_to=reply,
        mentions=mentions,
        mention_all=mention_all,
        edited_at=None if edited_ms is None else _moment(edited_ms),
        stream=stream,
    )
    # The stored extras, keyed as the message transactions key them (an unset one is left out or falsy).
    meta: dict[str, Any] = {}
    if reply is not None:
        meta["reply"] = reply.model_dump()
    if mentions or draw(st.booleans()):
        meta["mentions"] = mentions
    if mention_all:
        meta["all"] = True
    if edited_ms is not None:
        meta["edited_at"] = edited_ms
    if stream is not None:
        meta["stream"] = stream
    row = SimpleNamespace(
        conversation_id=conversation,
        seq=message.seq,
        sender_id=message.sender,
        client_msg_id=message.client_msg_id,
        created_at=sent_ms,
        body=content.__pydantic_serializer__.to_json(content).decode(),
        meta=orjson.dumps(meta).decode() if meta else None,
    )
    return message, row


@settings(max_examples=300, deadline=None)
@given(_messages())
def test_stored_json_is_the_schemas_json(case: tuple[Message, SimpleNamespace]) -> None:
    message, row = case
    written = _written(row, duplicate=False)
    sent_at = orjson.loads(written.json)["sent_at"]
    direct = message_json(
        row.conversation_id,
        row.seq,
        row.sender_id,
        row.client_msg_id,
        sent_at,
        row.body.encode(),
        None if row.meta is None else orjson.loads(row.meta),
    )
    # One writer: the send path (stored parts) and the read path (a stored row) make the same bytes.
    assert direct == written.json
    # They read back as the message they were made from.
    parsed = Message.model_validate_json(written.json)
    assert parsed == message
    assert written.message == message
    # Byte for byte what the schema writes for the fields present (the others are left to their defaults).
    assert written.json == parsed.model_dump_json(exclude_unset=True).encode()
    assert orjson.loads(message.model_dump_json()) == orjson.loads(parsed.model_dump_json())
    # And the frames that carry them, pushes and acks, read as the schema's frames.
    pushed = server_frames.validate_json(message_frame(written.json))
    assert isinstance(pushed, MessageFrame) and pushed.message == message
    acked = server_frames.validate_json(ack_frame("abcdefgh", written.json))
    assert isinstance(acked, AckFrame) and acked.message == message


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


def test_a_message_field_the_writer_does_not_know_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from im_server.storage import message_rows

    known = dict(message_rows._STORED_AS)
    del known["stream"]
    monkeypatch.setattr(message_rows, "_STORED_AS", known)
    with pytest.raises(TypeError, match="but Message has"):
        message_rows._optional()
