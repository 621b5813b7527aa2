"""Help renders flags and values the conventional way, for every command (Typer is pinned; this keeps it so)."""

from __future__ import annotations

import re

import typer

from im_cli.main import app


def _paths(command, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*prefix, name))


def test_help_has_no_python_types_and_no_braces(im):
    root = typer.main.get_command(app)
    paths = list(_paths(root))
    assert ("chat",) in paths and ("profile", "use") in paths
    for path in paths:
        result = im(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        text = result.stdout
        assert not re.search(r"<(bool|str|int|float|list|path|file)[^>]*>", text), (path, text)
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "{" not in usage, (path, usage)
    flags = im("history", "--help").stdout
    assert re.search(r"--json\s+Print JSON", flags)
    assert re.search(r"--limit\s+-n\s+INTEGER", flags)
