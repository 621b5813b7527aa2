"""Ctrl-C ends `im listen` promptly whatever it is doing: waiting for frames, waiting to reconnect, or
waiting for the API in the middle of a catch-up."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Listener
from tests.support.cluster import PASSWORD


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _account(im, url: str, name: str) -> None:
    for command in (("register", name), ("login", name, "--device", "term")):
        result = im("--server", url, "-P", name, *command, "--password-stdin", input=PASSWORD + "\n")
        assert result.exit_code == 0, result.output


def _env(config_dir: Path, profile: str) -> dict[str, str]:
    return {**os.environ, "IM_CONFIG_DIR": str(config_dir), "IM_PROFILE": profile, "PYTHONFAULTHANDLER": "1"}


class _Proxy:
    """A TCP relay to ``target`` that can stop relaying (an API that accepts requests and never answers)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.frozen = threading.Event()
        self.held = threading.Event()
        """Set when a request came while frozen."""
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.frozen.is_set():
                    self.held.set()
                    continue  # swallowed: the request waits for an answer that never comes
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def proxy(sqlite_cluster) -> Iterator[_Proxy]:
    host, port = sqlite_cluster.url.removeprefix("http://").rsplit(":", 1)
    relay = _Proxy((host, int(port)))
    yield relay
    relay.close()


def _threads_blocking(pid: int) -> dict[int, int]:
    """Each thread but the main one, and its mask of blocked signals (Linux)."""
    masks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) == pid:
            continue
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            for line in status:
                if line.startswith("SigBlk:"):
                    masks[int(tid)] = int(line.split()[1], 16)
    return masks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_while_the_api_does_not_answer(sqlite_cluster, proxy, im, config_dir):
    alice, bob = _name("alice"), _name("bob")
    for name in (alice, bob):
        _account(im, sqlite_cluster.url, name)
    listener = Listener(_env(config_dir, bob), ["--server", proxy.url, "listen"])
    try:
        listener.wait_stderr("Ctrl-C stops")
        # The connection's threads leave Ctrl-C to the main thread: were the kernel to hand it to one of
        # them, a main thread blocked in a read from the API would not see it until the read ended.
        masks = _threads_blocking(listener.process.pid)
        assert masks
        for sig in (2, 15):  # SIGINT, SIGTERM
            assert all(mask & (1 << (sig - 1)) for mask in masks.values()), masks
        proxy.frozen.set()
        im("-P", alice, "send", bob, "hello")  # straight to the API: bob's listener then asks through the proxy
        assert proxy.held.wait(30), "".join(listener.errors)
    finally:
        assert listener.interrupt() == 130


def test_ctrl_c_while_waiting_to_reconnect(sqlite_cluster, im, config_dir):
    alice, bob = _name("alice"), _name("bob")
    for name in (alice, bob):
        _account(im, sqlite_cluster.url, name)
    im("-P", alice, "send", bob, "one")
    listener = Listener(_env(config_dir, bob))
    try:
        assert [m["content"]["text"] for m in listener.wait(1)] == ["one"]
        for gateway in list(sqlite_cluster.gateways):
            sqlite_cluster.stop_gateway(gateway)
        listener.wait_stderr("reconnecting")  # and no gateway to go to: it backs off, again and again
    finally:
        assert listener.interrupt() == 130


def test_ctrl_c_while_the_gateway_does_not_answer(sqlite_cluster, im, config_dir):
    alice, bob = _name("alice"), _name("bob")
    for name in (alice, bob):
        _account(im, sqlite_cluster.url, name)
    gateway, _ = sqlite_cluster.spawn_gateway_process(_name("gw-"))
    for node in list(sqlite_cluster.gateways):
        sqlite_cluster.stop_gateway(node)  # the listener can only go to the gateway in its own process
    im("-P", alice, "send", bob, "one")
    listener = Listener(_env(config_dir, bob))
    try:
        assert [m["content"]["text"] for m in listener.wait(1)] == ["one"]
        gateway.send_signal(signal.SIGSTOP)  # as if the network went away: the closing handshake gets no answer
        # Less than websockets' close timeout (10 s): leaving on Ctrl-C does not wait that long for the gateway.
        assert listener.interrupt(within=8) == 130
    finally:
        gateway.send_signal(signal.SIGCONT)
        if listener.process.poll() is None:
            listener.process.kill()
