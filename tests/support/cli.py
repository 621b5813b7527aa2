"""Running the CLI in a process of its own, as a person would."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any


def listen(env: dict[str, str]) -> tuple[subprocess.Popen[str], Callable[[int], list[dict[str, Any]]]]:
    """`im listen --json` in a process of its own, and the lines it prints, as they come."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from im_cli.main import main; main()", "listen", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []
    arrived = threading.Condition()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with arrived:
                lines.append(json.loads(line))
                arrived.notify_all()

    threading.Thread(target=read, daemon=True).start()

    def wait(count: int) -> list[dict[str, Any]]:
        with arrived:
            assert arrived.wait_for(lambda: len(lines) >= count, 30), process.stderr.read() if process.poll() else ""
            return list(lines)

    return process, wait
