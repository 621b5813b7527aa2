"""Quick-reply buttons a text message may carry (``TextContent.buttons``); see :mod:`im_schema.presses`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = [
    "MAX_BUTTONS",
    "MAX_BUTTON_ID_LEN",
    "MAX_BUTTON_LABEL_LEN",
    "PRINTABLE",
    "Button",
    "ButtonId",
    "ButtonLabel",
    "unique_buttons",
]

MAX_BUTTONS = 8
"""Buttons one message may carry."""
MAX_BUTTON_ID_LEN = 64
MAX_BUTTON_LABEL_LEN = 64

ButtonId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_BUTTON_ID_LEN, pattern=r"^[A-Za-z0-9_.:-]+$")]
"""What a press reports: 1 to 64 of ``A-Z a-z 0-9 _ . : -`` (``yes``, ``vote:3``)."""

PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
ButtonLabel = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_BUTTON_LABEL_LEN, strip_whitespace=False, pattern=PRINTABLE)
]
"""What people see: 1 to 64 characters, no control characters (no line breaks, tabs or NUL)."""


class Button(BaseModel):
    """One quick-reply button of a message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: ButtonId
    """Reported back to the sender when pressed."""
    label: ButtonLabel
    """Shown to people."""


def unique_buttons(buttons: tuple[Button, ...] | None) -> tuple[Button, ...] | None:
    """Refuse two buttons with one id (a press names its button by id)."""
    if buttons is not None and len({button.id for button in buttons}) != len(buttons):
        raise ValueError("button ids must be unique within a message")
    return buttons
