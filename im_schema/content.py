"""Message contents: a union discriminated on ``kind``.

``text`` is what people type; ``system`` is written by the server itself (group changes, recalls) and
can never be sent by a client. Media kinds (image, file, voice, video) join this union with their own
models; readers must therefore tolerate kinds they do not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag

from .limits import MAX_TEXT_LEN

__all__ = [
    "Content",
    "OutgoingContent",
    "SystemContent",
    "TextContent",
    "UnknownContent",
]


class TextContent(BaseModel):
    """Plain text."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["text"] = "text"
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_LEN)]


class SystemContent(BaseModel):
    """A change announced by the server, with its own seq so that offline devices learn it by sync."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["system"] = "system"
    event: str
    """What happened, e.g. ``member_joined``."""
    actor: int | None = None
    """The user who caused it, if any."""
    data: dict[str, Any] = Field(default_factory=dict)


class UnknownContent(BaseModel):
    """A kind this version does not know (from a newer server): kept whole, so that nothing is lost."""

    model_config = ConfigDict(frozen=True, extra="allow")

    kind: str


_KNOWN_KINDS = frozenset({"text", "system"})


def _kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in _KNOWN_KINDS else "unknown"


Content = Annotated[
    Annotated[TextContent, Tag("text")]
    | Annotated[SystemContent, Tag("system")]
    | Annotated[UnknownContent, Tag("unknown")],
    Discriminator(_kind),
]
"""Any message content; kinds unknown to this version read as :class:`UnknownContent`."""

OutgoingContent = Annotated[TextContent, Field(discriminator="kind")]
"""What a client may send."""
