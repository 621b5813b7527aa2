"""`im listen`: my own messages sent from other terminals arrive live and in order; connection state
changes are printed on stderr."""

from __future__ import annotations

import os
import re

from tests.cli.test_cli import _login, _name
from tests.support.cli import Listener


def test_my_messages_from_another_terminal_arrive_live_in_order(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    listener = Listener({**os.environ, "IM_CONFIG_DIR": str(config_dir), "IM_PROFILE": "bob"})
    try:
        listener.wait_stderr("connected to")
        assert im("-P", "alice", "send", bob, "one").exit_code == 0
        listener.wait(1)
        # Sent by bob from another terminal (another process, the profile's other device session).
        assert im("-P", "bob", "send", alice, "two, mine").exit_code == 0
        listener.wait(2)
        assert im("-P", "alice", "send", bob, "three").exit_code == 0
        listener.wait(3)
        assert [(m["seq"], m["content"]["text"]) for m in listener.lines] == [
            (1, "one"),
            (2, "two, mine"),
            (3, "three"),
        ]

        # The gateways go away and come back: the listener says so on stderr, and goes on.
        for node in list(sqlite_cluster.gateways):
            sqlite_cluster.stop_gateway(node)
        listener.wait_stderr("disconnected from")
        # The reason is in words, not an exception's repr (``GoingAway('node stopping; reconnect')``).
        lost = next(line for line in listener.errors if "disconnected from" in line)
        assert re.search(r"[A-Z][A-Za-z]+\(", lost) is None, lost
        sqlite_cluster.add_gateway()
        listener.wait_stderr("reconnected to")
        assert im("-P", "alice", "send", bob, "four").exit_code == 0
        listener.wait(4)
        assert listener.lines[-1]["content"]["text"] == "four"
    finally:
        listener.process.terminate()
        listener.process.wait(10)
