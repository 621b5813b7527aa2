"""The command reference in docs/cli.md, generated from the Typer app (so it cannot drift from the code).

``python -m im_cli.docgen`` rewrites the part of docs/cli.md between the two marker lines;
``python -m im_cli.docgen --check`` exits 1 if that part is not current (tests/cli/test_docs.py runs
the same comparison). The text is plain Markdown built from each command's help, usage and parameters,
independent of the terminal's width.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

__all__ = ["BEGIN", "END", "reference", "updated"]

BEGIN = "<!-- BEGIN GENERATED: python -m im_cli.docgen -->"
END = "<!-- END GENERATED -->"


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subcommands = getattr(command, "commands", None)
    if path and (not subcommands or getattr(command, "invoke_without_command", False)):
        yield path, command
    for name, sub in (subcommands or {}).items():  # in the order they were registered
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, (*path, name))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _summary(command: Any) -> str:
    help_text = (command.help or "").strip()
    return _cell(help_text.split("\n\n")[0]) if help_text else ""


def _option(param: Any, ctx: Any) -> tuple[str, str]:
    names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    if not (param.is_flag or param.count):
        label = param.display_type_rich(ctx) or "VALUE"
        names += f" `{label}`"
    details = [_cell(param.help or "")]
    if param.envvar:
        details.append(f"(env `{param.envvar}`)")
    default = param.default
    if default not in (None, False, (), []) and not callable(default) and not param.is_flag:
        details.append(f"(default: `{default}`)")
    return names, " ".join(part for part in details if part)


def reference(app: typer.Typer) -> str:
    """Every command of ``app``: what it does, its usage, its arguments and options."""
    root = typer.main.get_command(app)
    lines: list[str] = []
    for path, command in _commands(root):
        name = "im " + " ".join(path)
        ctx = typer.Context(command, info_name=name)
        pieces = " ".join(command.collect_usage_pieces(ctx))
        lines += [f"### `{name}`", "", _summary(command), "", "```", f"{name} {pieces}".rstrip(), "```", ""]
        rows: list[tuple[str, str]] = []
        for param in command.get_params(ctx):
            if param.name == "help":
                continue
            if param.param_type_name == "argument":
                label = param.metavar or (param.name or "").upper()
                required = "" if param.required else " (optional)"
                rows.append((f"`{label}`{required}", _cell(getattr(param, "help", "") or "")))
            else:
                rows.append(_option(param, ctx))
        if rows:
            lines += ["| parameter | meaning |", "| --- | --- |"]
            lines += [f"| {left} | {right} |" for left, right in rows]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def updated(document: str, app: typer.Typer) -> str:
    """``document`` with the part between :data:`BEGIN` and :data:`END` regenerated."""
    start, end = document.index(BEGIN) + len(BEGIN), document.index(END)
    return document[:start] + "\n\n" + reference(app) + "\n" + document[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite docs/cli.md (or, with ``--check``, report whether it is current)."""
    from .main import app

    args = sys.argv[1:] if argv is None else argv
    path = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    current = path.read_text()
    fresh = updated(current, app)
    if "--check" in args:
        if fresh != current:
            print(f"{path} is not current; run: python -m im_cli.docgen", file=sys.stderr)
            return 1
        return 0
    path.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
