"""Message contents: a union discriminated on ``kind``.

``text`` is what people type; ``system`` is written by the server itself (group changes, recalls) and
can never be sent by a client. ``image``, ``file``, ``voice`` and ``video`` reference a blob uploaded
with ``POST /v1/files`` (see :mod:`im_schema.files`); readers must tolerate kinds they do not know.

What a client sends for a media message (:data:`OutgoingContent`) is only the blob's id plus what a
person chooses (a caption, a file name, a video's poster); the server fills in everything it reads from
the bytes (type, size, dimensions, duration, thumbnail). Clients never declare those, so they cannot lie
about them.

What people send is never blank (:func:`is_blank`): a text, a caption, an edit or the beginning of a stream
made only of whitespace and invisible characters is refused (``400 bad_request``), and any other text is
stored exactly as sent. The models of stored messages (:data:`Content`) do not apply the rule, so that a
blank text stored by an earlier version still reads.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    Tag,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from ._tagged import UNKNOWN, tags_of
from .buttons import MAX_BUTTONS, Button, unique_buttons
from .ids import STORABLE_TEXT
from .limits import MAX_TEXT_LEN

BlobId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A stored blob: the lowercase hex SHA-256 of its bytes (identical uploads are stored once)."""

MediaKind = Literal["image", "file", "voice", "video"]
"""The kinds of message that carry a blob."""

MEDIA_KINDS: frozenset[str] = frozenset(get_args(MediaKind))


def _without_nul(value: object) -> object:
    return value.replace("\x00", "") if isinstance(value, str) else value


FileName = Annotated[str, StringConstraints(min_length=1, max_length=255), BeforeValidator(_without_nul)]
"""A file name as a person gave it; NUL characters are dropped here, and servers keep the last path
component and drop the other control characters."""

_BLANK = re.compile(
    r"[\s\x00-\x1f\x7f-\x9f"
    r"\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    r"\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
    r"\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0"
    r"\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]*"
)
"""Texts that draw nothing. Their characters: whitespace (U+00A0, U+3000 and every other Unicode space),
controls; the format characters (zero-width space and joiners, U+FEFF, bidi marks, tags...) but the
prepended concatenation marks (U+0600, U+06DD..., which draw a sign); the letters and marks that draw
nothing (U+034F, the Hangul fillers, the Khmer inherent vowels, the blank Braille pattern); and the variation
selectors. A test checks the list against the Unicode database. One regular expression, so that a hostile
text of 16,000 of them costs microseconds."""


def is_blank(text: str) -> bool:
    """Tell whether ``text`` would show nothing: it has only whitespace (U+3000 and U+00A0 included),
    controls, format characters (zero-width space, U+FEFF...) and other characters that draw nothing.

    The empty text is blank. Clients may call this before sending; the schema refuses a blank text,
    caption, edit or stream beginning with ``400 bad_request``.
    """
    return _BLANK.fullmatch(text) is not None


def refuse_blank(text: str) -> str:
    """The validator of every text a person sends: refuses a blank one (see :func:`is_blank`), keeps the
    others exactly as sent (nothing is stripped)."""
    if is_blank(text):
        raise PydanticCustomError(
            "string_blank", "String should not be blank (only whitespace or invisible characters)"
        )
    return text


SentText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TEXT_LEN, pattern=STORABLE_TEXT), AfterValidator(refuse_blank)
]
"""A text a person sends (a message, an edit, a stream's beginning): 1 to ``MAX_TEXT_LEN`` characters, not
blank; servers apply their text length limit."""

Caption = SentText
"""Text shown with a media message; as a text, it is never blank."""

__all__ = [
    "MEDIA_KINDS",
    "BlobId",
    "Caption",
    "Content",
    "FileContent",
    "FileName",
    "ImageContent",
    "MediaContent",
    "MediaKind",
    "OutgoingContent",
    "OutgoingFile",
    "OutgoingImage",
    "OutgoingMedia",
    "OutgoingVideo",
    "OutgoingVoice",
    "Preview",
    "RecalledContent",
    "SentText",
    "SystemContent",
    "SystemEvent",
    "TextContent",
    "UnknownContent",
    "VideoContent",
    "VoiceContent",
    "is_blank",
    "refuse_blank",
]


def _absent(value: object) -> bool:
    return value is None


def _kind_required(schema: dict[str, Any]) -> None:
    # ``kind`` has a default so that ``TextContent(text=...)`` reads well, but the wire always carries it:
    # the unions are decided by it.
    required = schema.setdefault("required", [])
    if "kind" not in required:
        required.insert(0, "kind")


_CONTENT = ConfigDict(frozen=True, json_schema_extra=_kind_required)


class TextContent(BaseModel):
    """Plain text.

    A text sent must not be blank (only whitespace and characters that draw nothing, such as U+200B or
    U+FEFF: ``400 bad_request``); a text read is taken as stored.
    """

    model_config = _CONTENT

    kind: Literal["text"] = "text"
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_LEN, pattern=STORABLE_TEXT)]
    buttons: Annotated[
        tuple[Button, ...] | None,
        Field(min_length=1, max_length=MAX_BUTTONS, exclude_if=_absent),
        AfterValidator(unique_buttons),
    ] = None
    """Quick-reply buttons (1 to 8, unique ids); a member's press comes back to the sender (see
    :mod:`im_schema.presses`). Left out of the JSON when there are none."""


class SystemEvent(StrEnum):
    """What a system message announces: the ``event`` of :class:`SystemContent`.

    Server, SDK and CLI name events through this enum. :attr:`SystemContent.event` stays a plain string, so
    that a reader tolerates events a newer server writes.
    """

    GROUP_CREATED = "group_created"
    GROUP_UPDATED = "group_updated"
    GROUP_DISSOLVED = "group_dissolved"
    MEMBERS_JOINED = "members_joined"
    MEMBER_JOINED = "member_joined"
    """Written by earlier versions (joins are now ``members_joined``); still found in stored history."""
    MEMBER_LEFT = "member_left"
    MEMBER_KICKED = "member_kicked"
    ANNOUNCEMENT_SET = "announcement_set"
    OWNER_TRANSFERRED = "owner_transferred"
    ADMIN_ADDED = "admin_added"
    ADMIN_REMOVED = "admin_removed"
    MEMBER_MUTED = "member_muted"
    MEMBER_UNMUTED = "member_unmuted"
    NICKNAME_SET = "nickname_set"
    MESSAGE_RECALLED = "message_recalled"
    MESSAGE_EDITED = "message_edited"


class SystemContent(BaseModel):
    """A change announced by the server, with its own seq so that offline devices learn it by sync."""

    model_config = _CONTENT

    kind: Literal["system"] = "system"
    event: str
    """What happened, e.g. ``member_joined``."""
    actor: int | None = None
    """The user who caused it, if any."""
    data: dict[str, Any] = Field(default_factory=dict)


class RecalledContent(BaseModel):
    """What remains of a recalled message: its content is gone from storage."""

    model_config = _CONTENT

    kind: Literal["recalled"] = "recalled"
    by: int
    """Who recalled it: the sender, or a group owner or admin."""


def _unknown_kind(schema: dict[str, Any]) -> None:
    # Described as "any kind but the known ones", so that no content matches two branches of the union.
    schema["properties"]["kind"] = {"type": "string", "not": {"enum": sorted(_KNOWN_KINDS)}}


class UnknownContent(BaseModel):
    """A kind this version does not know (from a newer server): kept whole, so that nothing is lost."""

    model_config = ConfigDict(frozen=True, extra="allow", json_schema_extra=_unknown_kind)

    kind: str


class Preview(BaseModel):
    """A small image made by the server: an image's thumbnail, or the poster of a video."""

    model_config = ConfigDict(frozen=True)

    blob: BlobId
    media_type: str
    width: int
    height: int
    size: int
    """Bytes."""


class ImageContent(BaseModel):
    """A picture the server could decode; ``width`` and ``height`` as it is meant to be shown."""

    model_config = _CONTENT

    kind: Literal["image"] = "image"
    blob: BlobId
    name: str
    size: int
    """Bytes."""
    media_type: str
    """Read from the bytes, e.g. ``image/png``."""
    width: int
    height: int
    thumbnail: Preview
    caption: str | None = None


class FileContent(BaseModel):
    """Any file (a document, an archive, or media sent as it is)."""

    model_config = _CONTENT

    kind: Literal["file"] = "file"
    blob: BlobId
    name: str
    size: int
    media_type: str
    """Read from the bytes; ``application/octet-stream`` when the server cannot tell."""
    caption: str | None = None


class VoiceContent(BaseModel):
    """A voice note: audio whose duration the server read from the bytes."""

    model_config = _CONTENT

    kind: Literal["voice"] = "voice"
    blob: BlobId
    name: str
    size: int
    media_type: str
    duration_ms: int
    caption: str | None = None


class VideoContent(BaseModel):
    """A clip whose duration (and picture size, where the container says) the server read from the bytes."""

    model_config = _CONTENT

    kind: Literal["video"] = "video"
    blob: BlobId
    name: str
    size: int
    media_type: str
    duration_ms: int
    width: int | None = None
    height: int | None = None
    poster: Preview | None = None
    """A still made from an image the sender uploaded for it, if any."""
    caption: str | None = None


MediaContent = ImageContent | FileContent | VoiceContent | VideoContent
"""A message content that carries a blob."""


class _Outgoing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_kind_required)


class OutgoingImage(_Outgoing):
    """Send an uploaded image; the server fills in its type, size, dimensions and thumbnail."""

    kind: Literal["image"] = "image"
    blob: BlobId
    name: FileName | None = None
    """Defaults to the name it was uploaded with."""
    caption: Caption | None = None


class OutgoingFile(_Outgoing):
    """Send any uploaded blob as a file."""

    kind: Literal["file"] = "file"
    blob: BlobId
    name: FileName | None = None
    caption: Caption | None = None


class OutgoingVoice(_Outgoing):
    """Send uploaded audio as a voice note; the server reads its duration."""

    kind: Literal["voice"] = "voice"
    blob: BlobId
    name: FileName | None = None
    caption: Caption | None = None


class OutgoingVideo(_Outgoing):
    """Send an uploaded video; ``poster`` names an uploaded image to show before it plays."""

    kind: Literal["video"] = "video"
    blob: BlobId
    name: FileName | None = None
    caption: Caption | None = None
    poster: BlobId | None = None


OutgoingMedia = OutgoingImage | OutgoingFile | OutgoingVoice | OutgoingVideo
"""What a client sends for a media message."""


def _kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in _KNOWN_KINDS else UNKNOWN


class _ContentMapping:
    """Adds the discriminator mapping (``kind`` to schema) that a callable discriminator does not produce."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        branches = schema.get("oneOf", [])
        if len(branches) == len(_KINDS) + 1:
            mapping = {kind: branch["$ref"] for kind, branch in zip(_KINDS, branches, strict=False)}
            schema["discriminator"] = {"propertyName": "kind", "mapping": mapping}
        return schema


Content = Annotated[
    Annotated[TextContent, Tag("text")]
    | Annotated[SystemContent, Tag("system")]
    | Annotated[RecalledContent, Tag("recalled")]
    | Annotated[ImageContent, Tag("image")]
    | Annotated[FileContent, Tag("file")]
    | Annotated[VoiceContent, Tag("voice")]
    | Annotated[VideoContent, Tag("video")]
    | Annotated[UnknownContent, Tag("unknown")],
    Discriminator(_kind),
    _ContentMapping,
]
"""Any message content; kinds unknown to this version read as :class:`UnknownContent`.

To add a kind: declare its model, add a tagged branch here (before ``unknown``), and to
:data:`OutgoingContent` if clients may send it; the known kinds are read from this union."""

_KINDS = tags_of(Content)
_KNOWN_KINDS = frozenset(_KINDS)


def _text_shows_something(content: TextContent) -> TextContent:
    refuse_blank(content.text)
    return content


OutgoingContent = Annotated[
    Annotated[TextContent, AfterValidator(_text_shows_something)]
    | OutgoingImage
    | OutgoingFile
    | OutgoingVoice
    | OutgoingVideo,
    Field(discriminator="kind"),
]
"""What a client may send: a text is never blank, nor a caption (see :func:`is_blank`)."""
