"""Running the CLI in a process of its own, as a person would."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any


class Listener:
    """``im ARGS... listen`` in a process of its own; what it prints comes in as it is printed."""

    def __init__(self, env: dict[str, str], args: Sequence[str] = ("listen", "--json")) -> None:
        self.json = "--json" in args
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from im_cli.main import main; main()", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[Any] = []
        """stdout: one decoded object per line with ``--json``, else the lines."""
        self.errors: list[str] = []
        """stderr, line by line."""
        self._arrived = threading.Condition()
        for stream, into in ((self.process.stdout, self.lines), (self.process.stderr, self.errors)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    def _read(self, stream: Any, into: list[Any]) -> None:
        for line in stream:
            with self._arrived:
                into.append(json.loads(line) if self.json and into is self.lines else line)
                self._arrived.notify_all()

    def wait(self, count: int) -> list[Any]:
        """The first ``count`` lines of stdout (or more), once they came."""
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.lines) >= count, 30), "".join(self.errors)
            return list(self.lines)

    def wait_stderr(self, text: str) -> None:
        """Until a line of stderr contains ``text``."""
        with self._arrived:
            assert self._arrived.wait_for(lambda: any(text in line for line in self.errors), 30), "".join(self.errors)

    def interrupt(self, within: float = 10) -> int:
        """Ctrl-C; the exit code, once it ended (failing, with where every thread was, if it did not end)."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # faulthandler (PYTHONFAULTHANDLER) prints every thread
            self.process.wait(10)
        with self._arrived:
            self._arrived.wait_for(lambda: any("most recent call first" in line for line in self.errors), 5)
            raise AssertionError(f"still running {within}s after Ctrl-C:\n" + "".join(self.errors))


def listen(env: dict[str, str]) -> tuple[subprocess.Popen[str], Callable[[int], list[dict[str, Any]]]]:
    """`im listen --json` in a process of its own, and the lines it prints, as they come."""
    listener = Listener(env)
    return listener.process, listener.wait
