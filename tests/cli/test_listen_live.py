"""`im listen`: my own messages sent from other terminals arrive live and in order; connection state
changes are printed on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

from tests.cli.test_cli import _login, _name


class _Listener:
    """`im listen --json` in its own process; stdout lines parsed, stderr lines kept."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from im_cli.main import main; main()", "listen", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict] = []
        self.errors: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True).start()

    def _read(self, stream, is_json: bool) -> None:
        for line in stream:
            with self.changed:
                (self.lines if is_json else self.errors).append(json.loads(line) if is_json else line)
                self.changed.notify_all()

    def wait(self, predicate, timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), (self.lines, self.errors)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_my_messages_from_another_terminal_arrive_live_in_order(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    listener = _Listener({**os.environ, "IM_CONFIG_DIR": str(config_dir), "IM_PROFILE": "bob"})
    try:
        listener.wait(lambda: any("connected to" in line for line in listener.errors))
        assert im("-P", "alice", "send", bob, "one").exit_code == 0
        listener.wait(lambda: len(listener.lines) >= 1)
        # Sent by bob from another terminal (another process, the profile's other device session).
        assert im("-P", "bob", "send", alice, "two, mine").exit_code == 0
        listener.wait(lambda: len(listener.lines) >= 2)
        assert im("-P", "alice", "send", bob, "three").exit_code == 0
        listener.wait(lambda: len(listener.lines) >= 3)
        assert [(m["seq"], m["content"]["text"]) for m in listener.lines] == [
            (1, "one"),
            (2, "two, mine"),
            (3, "three"),
        ]

        # The gateways go away and come back: the listener says so on stderr, and goes on.
        for node in list(sqlite_cluster.gateways):
            sqlite_cluster.stop_gateway(node)
        listener.wait(lambda: any("disconnected from" in line for line in listener.errors))
        # The reason is in words, not an exception's repr (``GoingAway('node stopping; reconnect')``).
        lost = next(line for line in listener.errors if "disconnected from" in line)
        assert re.search(r"[A-Z][A-Za-z]+\(", lost) is None, lost
        sqlite_cluster.add_gateway()
        listener.wait(lambda: any("reconnected to" in line for line in listener.errors))
        assert im("-P", "alice", "send", bob, "four").exit_code == 0
        listener.wait(lambda: len(listener.lines) >= 4)
        assert listener.lines[-1]["content"]["text"] == "four"
    finally:
        listener.stop()
