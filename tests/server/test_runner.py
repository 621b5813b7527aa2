"""`python -m im_server api` (and `im server api`) run in a process that goes on leaves it as it found it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading

from im_server.cluster.natsbin import free_port, wait_for_port
from im_server.runner import main


def test_an_api_node_run_in_process_puts_the_process_back(sqlite_cluster, monkeypatch):
    port = free_port()
    env = {**sqlite_cluster.env(), "IM_NODE_ID": "api-in-process", "IM_API_PORT": str(port), "IM_API_HOST": "127.0.0.1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    before = (list(root.handlers), root.level, type(asyncio.get_event_loop_policy()), sys.getswitchinterval())
    frozen = gc.get_freeze_count()
    failed: list[BaseException] = []

    def stop_when_up() -> None:
        try:
            wait_for_port("127.0.0.1", port, timeout=60)
        except BaseException as exc:  # reported below, after main() returned
            failed.append(exc)
        os.kill(os.getpid(), signal.SIGINT)  # the node's own handler stops it

    threading.Thread(target=stop_when_up, daemon=True).start()
    assert main(["api"]) == 0
    assert not failed
    after = (list(root.handlers), root.level, type(asyncio.get_event_loop_policy()), sys.getswitchinterval())
    assert after == before and gc.get_freeze_count() == frozen
    # Ctrl-C works as before (uvloop leaves handlers of its own, bound to the closed loop).
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
