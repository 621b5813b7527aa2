"""How ``im --help`` renders parameters: ``--json`` (no ``<bool>``), ``--limit INTEGER``, ``TO`` (no braces).

Typer 0.29 labels every parameter with its Python type (``--json <bool>``, ``{TO}`` in the usage line);
:func:`configure_help` puts back the conventions of click and of most command lines: flags take no value,
a value is named in capitals (``INTEGER``, ``TEXT``, ``PATH``), arguments are named in capitals and
optional ones in brackets. It patches three display methods of Typer's parameter classes, so Typer is
pinned to a minor version in pyproject.toml and tests/cli/test_help.py checks the rendered help.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperOption

__all__ = ["configure_help", "value_label"]

_LABELS = {
    "int": "INTEGER",
    "str": "TEXT",
    "float": "NUMBER",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIR",
    "datetime": "TIME",
    "uuid": "UUID",
}


def value_label(python_type: str) -> str:
    """``int range`` -> ``INTEGER``; ``list[str]`` -> ``TEXT``; ``a|b`` stays ``a|b``."""
    label = python_type.strip("<>")
    match = re.fullmatch(r"list\[(.*)\]", label)
    if match:
        label = match.group(1)
    label = label.removesuffix(" range")
    return _LABELS.get(label.lower(), label if "|" in label else label.upper())


def _option_type(self: TyperOption, ctx: Any) -> str | None:
    if self.metavar is not None:
        return self.metavar
    if self.is_flag or self.is_bool_flag or self.count:
        return None
    return value_label(self.display_type(ctx))


def _argument_type(self: TyperArgument, ctx: Any) -> str | None:
    return None  # the argument's name (in capitals) already says what it is


def _argument_name(self: TyperArgument) -> str:
    name = self.metavar if self.metavar is not None else (self.name or "").upper()
    return name


def _argument_usage(self: TyperArgument) -> str:
    name = _argument_name(self)
    if self.metavar is None:
        name = name if self.required else f"[{name}]"
        if self.nargs != 1:
            name += "..."
    return name


def configure_help() -> None:
    """Render flags, values and arguments the conventional way (idempotent)."""
    TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
    TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign,assignment]
    TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment,method-assign]
    TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
