"""What people send is never blank: a text, a caption, an edit or a stream's beginning made only of whitespace
and characters that draw nothing is refused; any other text is kept exactly as sent; stored blanks still read."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from im_schema.content import (
    MEDIA_KINDS,
    Content,
    OutgoingImage,
    TextContent,
    is_blank,
)
from im_schema.frames import client_frames
from im_schema.lifecycle import EditRequest
from im_schema.limits import MAX_TEXT_LEN
from im_schema.models import Message
from im_schema.rest import SendMessageRequest
from im_schema.streams import AppendStreamRequest, FinishStreamRequest, OpenStreamRequest

BLOB = "a" * 64

# Each alone, and mixed below: none of them draws anything.
BLANK_CHARACTERS = {
    "space": " ",
    "tab": "\t",
    "newline": "\n",
    "carriage return": "\r",
    "vertical tab": "\v",
    "form feed": "\f",
    "file separator": "\x1c",
    "bell": "\x07",
    "delete": "\x7f",
    "next line": "\x85",
    "no-break space": "\u00a0",
    "soft hyphen": "\u00ad",
    "combining grapheme joiner": "\u034f",
    "arabic letter mark": "\u061c",
    "hangul choseong filler": "\u115f",
    "hangul jungseong filler": "\u1160",
    "khmer vowel inherent aq": "\u17b4",
    "mongolian free variation selector": "\u180b",
    "mongolian vowel separator": "\u180e",
    "en quad": "\u2000",
    "em space": "\u2003",
    "thin space": "\u2009",
    "hair space": "\u200a",
    "zero-width space": "\u200b",
    "zero-width non-joiner": "\u200c",
    "zero-width joiner": "\u200d",
    "left-to-right mark": "\u200e",
    "right-to-left mark": "\u200f",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "right-to-left override": "\u202e",
    "narrow no-break space": "\u202f",
    "medium mathematical space": "\u205f",
    "word joiner": "\u2060",
    "invisible times": "\u2062",
    "left-to-right isolate": "\u2066",
    "braille pattern blank": "\u2800",
    "ideographic space": "\u3000",
    "hangul filler": "\u3164",
    "variation selector-16": "\ufe0f",
    "byte order mark": "\ufeff",
    "halfwidth hangul filler": "\uffa0",
    "interlinear annotation anchor": "\ufff9",
    "language tag": "\U000e0001",
    "tag latin small a": "\U000e0061",
    "variation selector-256": "\U000e01ef",
}

BLANKS = [
    *BLANK_CHARACTERS.values(),
    "   ",
    "\n\n\n",
    " \t\r\n",
    "\u3000\u3000",
    "\u200b\u200b\u200b",
    "\ufeff \ufeff",
    "\u00a0\u2003\u200b\u2060\ufeff\u3164\u2800",
    "\u202e\u200f\u200e\u2066",
    "".join(BLANK_CHARACTERS.values()),
    " " * MAX_TEXT_LEN,
    "\u200b" * MAX_TEXT_LEN,
]
BLANK_IDS = [*BLANK_CHARACTERS, "spaces", "newlines", "ascii", "ideographic", "zwsp", "bom", "mixed", "bidi", "all"]
BLANK_IDS += ["max-spaces", "max-zwsp"]

# Texts that show something, however little, with blanks around or inside: kept exactly as sent.
VISIBLE = [
    ".",
    "  hi  ",
    "\n\nhello\n",
    "\u3000こんにちは\u3000",
    "\u200bx\u200b",
    "\ufeffa",
    "👍",
    "❤\ufe0f",
    "👩\u200d💻",
    "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "한",
    "ㅤ한",  # a Hangul filler, then a syllable
    "\u0301",  # a lone combining accent is drawn (on a dotted circle)
    "\u00a0-\u00a0",
    "\ue000",  # private use: a font may draw it
    "\u0600",  # a format character that draws a sign
    "\u06dd",
    " \u200b" * 7999 + "x",
]


def _send(content: dict[str, Any]) -> SendMessageRequest:
    return SendMessageRequest(to=2, client_msg_id="abcdefgh", content=content)


def _blank_error(info: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    errors = info.value.errors()
    assert [error["type"] for error in errors] == ["string_blank"], errors
    return errors[0]


def test_the_blank_characters_are_what_they_claim() -> None:
    # Guards the table: a typo (a visible character) would make every test below pass for the wrong reason.
    assert all(len(char) == 1 for char in BLANK_CHARACTERS.values())
    assert len(BLANKS) == len(BLANK_IDS)


# Format characters that draw a sign over the digits after them (Unicode's Prepended_Concatenation_Mark).
SIGNS = {*range(0x600, 0x606), 0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0x110BD, 0x110CD}
DRAW_NOTHING = {0x34F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0}
VARIATION_SELECTORS = {*range(0x180B, 0x180E), 0x180F, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}


def _draws_nothing(code: int) -> bool:
    char = chr(code)
    category = unicodedata.category(char)
    return (
        char.isspace()
        or category == "Cc"
        or (category == "Cf" and code not in SIGNS)
        or code in DRAW_NOTHING
        or code in VARIATION_SELECTORS
    )


def test_the_blank_characters_are_those_of_the_unicode_database() -> None:
    # The rule is one regular expression (fast on 16,000 hostile characters); this holds it to the database
    # of the running Python, so that a newer Unicode's format characters are noticed. Code points unassigned
    # here may be listed (a newer Unicode assigned them).
    codes = (code for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF)
    wrong = [
        f"U+{code:04X} {unicodedata.category(chr(code))}"
        for code in codes
        if is_blank(chr(code)) != _draws_nothing(code)
        and not (unicodedata.category(chr(code)) == "Cn" and is_blank(chr(code)))
    ]
    assert wrong == []


@pytest.mark.parametrize("text", BLANKS, ids=BLANK_IDS)
def test_blank_texts_are_blank(text: str) -> None:
    assert is_blank(text)


def test_the_empty_text_is_blank() -> None:
    assert is_blank("")


@pytest.mark.parametrize("text", VISIBLE)
def test_visible_texts_are_not_blank(text: str) -> None:
    assert not is_blank(text)


@pytest.mark.parametrize("text", BLANKS, ids=BLANK_IDS)
def test_a_blank_text_message_is_refused(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        _send({"kind": "text", "text": text})
    assert _blank_error(info)["loc"] == ("content", "text")


@pytest.mark.parametrize("text", BLANKS, ids=BLANK_IDS)
def test_a_blank_send_frame_is_refused(text: str) -> None:
    frame = {"type": "send", "to": 2, "client_msg_id": "abcdefgh", "content": {"kind": "text", "text": text}}
    with pytest.raises(ValidationError) as info:
        client_frames.validate_json(json.dumps(frame))
    _blank_error(info)


def test_a_blank_text_with_buttons_is_refused() -> None:
    content = {"kind": "text", "text": "\u3000", "buttons": [{"id": "yes", "label": "Yes"}]}
    with pytest.raises(ValidationError) as info:
        _send(content)
    _blank_error(info)


@pytest.mark.parametrize("kind", sorted(MEDIA_KINDS))
@pytest.mark.parametrize("caption", ["  ", "\u200b", "\u3000\n", "\ufeff"])
def test_a_blank_caption_is_refused(kind: str, caption: str) -> None:
    with pytest.raises(ValidationError) as info:
        _send({"kind": kind, "blob": BLOB, "caption": caption})
    assert _blank_error(info)["loc"] == ("content", kind, "caption")


@pytest.mark.parametrize("kind", sorted(MEDIA_KINDS))
def test_media_without_a_caption_is_sent(kind: str) -> None:
    assert _send({"kind": kind, "blob": BLOB}).content.kind == kind
    assert OutgoingImage(blob=BLOB).caption is None


@pytest.mark.parametrize("text", BLANKS, ids=BLANK_IDS)
def test_a_blank_edit_is_refused(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        EditRequest(conversation="d:1:2", seq=1, text=text)
    assert _blank_error(info)["loc"] == ("text",)


@pytest.mark.parametrize("text", ["\n", " ", "\u200b\u3000"])
def test_a_stream_cannot_begin_blank(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        OpenStreamRequest(to=2, client_msg_id="abcdefgh", text=text)
    _blank_error(info)


@pytest.mark.parametrize("text", ["\n", " ", "\u200b\u3000"])
def test_a_stream_goes_on_with_blanks(text: str) -> None:
    # A language model's pieces are often a space or a line break; only the beginning must show something.
    assert AppendStreamRequest(conversation="d:1:2", seq=1, offset=3, text=text).text == text
    assert FinishStreamRequest(conversation="d:1:2", seq=1, offset=3, text=text).text == text


@pytest.mark.parametrize("text", VISIBLE)
def test_visible_texts_are_kept_exactly(text: str) -> None:
    sent = _send({"kind": "text", "text": text})
    assert isinstance(sent.content, TextContent) and sent.content.text == text
    frame = {"type": "send", "to": 2, "client_msg_id": "abcdefgh", "content": {"kind": "text", "text": text}}
    assert client_frames.validate_json(json.dumps(frame)).content.text == text  # type: ignore[union-attr]
    assert EditRequest(conversation="d:1:2", seq=1, text=text).text == text
    assert OpenStreamRequest(to=2, client_msg_id="abcdefgh", text=text).text == text
    assert _send({"kind": "image", "blob": BLOB, "caption": text}).content.caption == text  # type: ignore[union-attr]


def test_the_other_limits_still_apply_first() -> None:
    with pytest.raises(ValidationError) as info:
        _send({"kind": "text", "text": ""})
    assert [error["type"] for error in info.value.errors()] == ["string_too_short"]
    with pytest.raises(ValidationError) as info:
        _send({"kind": "text", "text": " " * (MAX_TEXT_LEN + 1)})
    assert [error["type"] for error in info.value.errors()] == ["string_too_long"]
    with pytest.raises(ValidationError) as info:
        _send({"kind": "text", "text": " \x00 "})
    assert [error["type"] for error in info.value.errors()] == ["string_pattern_mismatch"]


def test_stored_blank_texts_still_read() -> None:
    # Written before the rule (or by a rewrite of a stream): a reader takes what is stored.
    message = {
        "conversation": "d:1:2",
        "seq": 1,
        "sender": 1,
        "client_msg_id": "abcdefgh",
        "content": {"kind": "text", "text": "\u3000"},
        "sent_at": "2026-11-28T10:08:36.610Z",
    }
    assert Message.model_validate(message).content == TextContent(text="\u3000")
    assert TextContent(text=" ").text == " "
    preview = {"blob": BLOB, "media_type": "image/png", "width": 1, "height": 1, "size": 1}
    image = {"kind": "image", "blob": BLOB, "name": "a.png", "size": 1, "media_type": "image/png", "width": 1}
    stored = TypeAdapter(Content).validate_python({**image, "height": 1, "thumbnail": preview, "caption": " "})
    assert stored.caption == " "  # type: ignore[union-attr]
