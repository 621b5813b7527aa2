from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from im_cli.main import app


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "config"
    monkeypatch.setenv("IM_CONFIG_DIR", str(directory))
    monkeypatch.delenv("IM_SERVER", raising=False)
    monkeypatch.delenv("IM_PROFILE", raising=False)
    return directory


@pytest.fixture
def im(config_dir: Path) -> Iterator[Callable[..., Result]]:
    """Run ``im ARGS...`` in-process; ``input=`` feeds stdin."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    yield run
