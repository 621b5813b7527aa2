"""Message contents: a union discriminated on ``kind``.

``text`` is what people type; ``system`` is written by the server itself (group changes, recalls) and
can never be sent by a client. Media kinds (image, file, voice, video) join this union with their own
models; readers must therefore tolerate kinds they do not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .limits import MAX_TEXT_LEN

__all__ = [
    "Content",
    "OutgoingContent",
    "SystemContent",
    "TextContent",
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


Content = Annotated[TextContent | SystemContent, Field(discriminator="kind")]
"""Any stored message content."""

OutgoingContent = Annotated[TextContent, Field(discriminator="kind")]
"""What a client may send."""
