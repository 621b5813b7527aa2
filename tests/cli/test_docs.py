"""docs/cli.md's reference is generated from the Typer app: it must be current."""

from __future__ import annotations

from pathlib import Path

from im_cli.docgen import BEGIN, END, updated
from im_cli.main import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_the_cli_reference_is_current():
    current = DOC.read_text()
    assert BEGIN in current and END in current
    assert updated(current, app) == current, "docs/cli.md is not current; run: python -m im_cli.docgen"


def test_every_command_is_in_the_reference():
    text = DOC.read_text()
    for command in ("im chat", "im profile use", "im groups info", "im server up", "im download"):
        assert f"### `{command}`" in text
