"""Kinds are declared once, in the tagged unions; the sets of known kinds are read from them."""

from __future__ import annotations

from typing import Annotated, get_args

import pytest
from pydantic import Tag, TypeAdapter

from im_schema import content, events
from im_schema._tagged import UNKNOWN, tags_of
from im_schema.content import Content, SystemContent, SystemEvent, UnknownContent
from im_schema.events import Notice, UnknownNotice

_contents: TypeAdapter[Content] = TypeAdapter(Content)
_notices: TypeAdapter[Notice] = TypeAdapter(Notice)


def _branches(union: object) -> list[tuple[type, str]]:
    members = get_args(get_args(union)[0])
    return [(get_args(member)[0], next(m.tag for m in member.__metadata__ if isinstance(m, Tag))) for member in members]


@pytest.mark.parametrize("union", [Content, Notice])
def test_each_tag_names_its_models_kind(union: object) -> None:
    for model, tag in _branches(union):
        if tag != UNKNOWN:
            assert model.model_fields["kind"].default == tag


def test_known_kinds_come_from_the_unions() -> None:
    assert content._KINDS == ("text", "system", "recalled", "image", "file", "voice", "video")
    assert frozenset(tags_of(Notice)) == events._KNOWN
    assert "presence" in events._KNOWN
    assert {"image", "file", "voice", "video"} == content.MEDIA_KINDS


def test_tags_of_refuses_an_untagged_branch() -> None:
    with pytest.raises(TypeError, match="no Tag"):
        tags_of(Annotated[int | str, "not a discriminator"])


@pytest.mark.parametrize("kind", ["poll", "UNKNOWN", "", "text ", "__class__"])
def test_unknown_kinds_are_kept(kind: str) -> None:
    read = _contents.validate_python({"kind": kind, "question": "?"})
    assert isinstance(read, UnknownContent)
    assert read.kind == kind
    assert read.model_dump() == {"kind": kind, "question": "?"}
    notice = _notices.validate_python({"kind": kind, "x": 1})
    assert isinstance(notice, UnknownNotice)


def test_system_events_stay_plain_strings_on_the_wire() -> None:
    known = SystemContent(event=SystemEvent.MEMBER_LEFT, data={"user": 1})
    assert _contents.dump_json(known) == b'{"kind":"system","event":"member_left","actor":null,"data":{"user":1}}'
    future = _contents.validate_python({"kind": "system", "event": "poll_closed"})
    assert isinstance(future, SystemContent) and future.event == "poll_closed"
    assert SystemEvent("member_left") == "member_left"


def test_the_media_kinds_are_those_of_the_media_unions() -> None:
    # MediaKind is a Literal (for type hints), kept beside the unions: it must name exactly their kinds,
    # in their order, since the server, SDK and CLI read the list of media kinds from it.
    received = tuple(model.model_fields["kind"].default for model in get_args(content.MediaContent))
    sent = tuple(model.model_fields["kind"].default for model in get_args(content.OutgoingMedia))
    assert get_args(content.MediaKind) == received == sent
    assert frozenset(received) == content.MEDIA_KINDS
