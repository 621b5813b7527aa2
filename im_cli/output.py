"""Where output goes: results to stdout (tables, or JSON with ``--json``), problems to stderr."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console

__all__ = ["err", "out", "print_json", "when"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
