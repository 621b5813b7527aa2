"""Where output goes: results to stdout (tables, or JSON with ``--json``), problems to stderr.

Everything shown comes partly from other people (texts, names, file names), so control characters are
never written to the terminal as they are: an escape sequence in a message could otherwise retitle the
window, move the cursor over earlier lines, or write to the clipboard. :func:`printable` shows each one
as a visible symbol (``␛`` for ESC), one character for one, and the consoles below apply it to every
string they print; ``--json`` output escapes them anyway.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

__all__ = ["err", "out", "print_json", "printable", "printable_text", "when"]

# C0 controls but tab and newline, DEL and the C1 controls (0x9b is a one-byte CSI on some terminals).
_CONTROLS: dict[int, int | None] = {code: 0x2400 + code for code in range(0x20) if code not in (0x09, 0x0A)}
_CONTROLS[0x0D] = None  # a carriage return (of a "\r\n" line end) is dropped, as Rich drops it
_CONTROLS[0x7F] = 0x2421
_CONTROLS.update({code: 0xFFFD for code in range(0x80, 0xA0)})


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline shown as a symbol (``\\x1b`` as ``␛``).

    One character stands for one (a carriage return, dropped, aside), so offsets into the text (styles,
    spans) stay right.
    """
    return text.translate(_CONTROLS)


def printable_text(text: Text) -> Text:
    """A :class:`~rich.text.Text` made :func:`printable` in place, its styles kept; returns it."""
    plain = text.plain
    cleaned = printable(plain)
    if cleaned != plain:
        text.plain = cleaned
    return text


class _Console(Console):
    """A console that never writes a control character that came in a string (see the module docstring)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)


out: Console = _Console(highlight=False, soft_wrap=True)
err: Console = _Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    """One JSON document on one line."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json()
    elif isinstance(value, list):
        text = "[" + ",".join(v.model_dump_json() if isinstance(v, BaseModel) else json.dumps(v) for v in value) + "]"
    else:
        text = json.dumps(value, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def when(moment: datetime) -> str:
    """A short local time: ``14:03`` today, ``Nov 27 14:03`` otherwise."""
    local = moment.astimezone()
    now = datetime.now().astimezone()
    return local.strftime("%H:%M" if local.date() == now.date() else "%b %d %H:%M")
