"""`im server up`: a real nats-server, API and gateway processes, supervised and stopped cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest

from im_sdk import AsyncClient, Backoff
from im_server.cluster.natsbin import free_port_block
from tests.support.inbox import Inbox

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)


def test_server_up_runs_supervises_stops_cannot_start_twice_and_its_demo_is_idempotent(tmp_path: Path):
    # One test, so that the expensive start of a whole cluster happens twice rather than three times.
    port = free_port_block(3)
    data = tmp_path / "data"
    process, output, up = _server_up(port, data, "--demo", gateways=2)
    try:
        assert up.wait(90), "".join(output) + (process.stderr.read() if process.poll() is not None else "")
        text = "".join(output)
        assert f"http://127.0.0.1:{port}" in text and f"ws://127.0.0.1:{port + 2}/ws" in text
        # A data dir made by this start is private from its creation, so nothing warns about it.
        assert data.stat().st_mode & 0o777 == 0o700 and "can be read by other users" not in text
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert sorted(health["gateways"]) == ["gw-1", "gw-2"]

        async def chat() -> list[str]:
            url = f"http://127.0.0.1:{port}"
            async with AsyncClient(url, backoff=Backoff(0.05, max_delay=0.5)) as bob:
                await bob.login("bob", "demo-password", device="test")
                inbox = Inbox(bob)
                first = await inbox.next(30)
                async with AsyncClient(url) as alice:
                    await alice.login("alice", "demo-password", device="test")
                    await alice.send_text("bob", "second")
                second = await inbox.next(30)
                await inbox.close()
                return [first.text or "", second.text or ""]

        texts = asyncio.run(chat())
        assert texts[1] == "second" and texts[0].startswith("Hi Bob")
        # Hints are exact for a port that is not the default one.
        server = f"http://127.0.0.1:{port}"
        assert f"echo demo-password | im --server {server} --profile bob login bob --password-stdin" in text
        _refused_while_running(port, data, tmp_path)

        # A gateway that dies is restarted by the supervisor.
        children = _find_children(port)
        os.kill(children["gw-1"], signal.SIGKILL)
        _wait(lambda: _find_children(port).get("gw-1", children["gw-1"]) != children["gw-1"])
        _wait(lambda: "gw-1" in httpx.get(f"http://127.0.0.1:{port}/healthz").json()["gateways"])

        # So is a nats-server that dies: same port, same store, and the nodes carry on.
        nats_pid = _find_nats(tmp_path / "data")
        assert nats_pid is not None
        os.kill(nats_pid, signal.SIGKILL)
        _wait(lambda: _find_nats(tmp_path / "data") not in (None, nats_pid))
        _wait(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200)

        async def after_nats_restart() -> None:
            url = f"http://127.0.0.1:{port}"
            async with AsyncClient(url, backoff=Backoff(0.05, max_delay=0.5)) as bob:
                await bob.login("bob", "demo-password", device="test")
                inbox = Inbox(bob)
                async with AsyncClient(url) as alice:
                    await alice.login("alice", "demo-password", device="test")
                    await alice.send_text("bob", "after nats restart")
                await inbox.until_text("after nats restart", 30)
                await inbox.close()

        asyncio.run(after_nats_restart())

        # The restarted nats-server admits only the cluster's users, as before.
        nats_url = next(match[1] for line in output if (match := re.match(r"NATS\s+(nats://\S+)", line)))

        async def stranger() -> None:
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(nats_url, allow_reconnect=False, max_reconnect_attempts=0)

        asyncio.run(stranger())
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert code == 130, process.stderr.read()  # stopped by Ctrl-C
    for offset in range(3):
        assert not _listening(port + offset)
    assert _find_children(port) == {}

    # Started again on the same data dir: the demo does not store its welcome message twice.
    second, output, up = _server_up(port, data, "--demo")
    try:
        assert up.wait(90), "".join(output)

        async def welcome() -> list[str]:
            async with AsyncClient(f"http://127.0.0.1:{port}") as bob:
                await bob.login("bob", "demo-password", device="test")
                (summary,) = await bob.conversations()
                page = await bob.history(summary.id)
                return [message.content.text for message in page.messages]  # type: ignore[union-attr]

        texts = asyncio.run(welcome())
        assert texts[1:] == ["second", "after nats restart"]  # one welcome message, not two
        # Its command works as printed (it names the server and the profile).
        assert f"im --server http://127.0.0.1:{port} --profile bob send alice" in texts[0]
    finally:
        second.send_signal(signal.SIGINT)
        assert second.wait(60) == 130


def _find_nats(data_dir: Path) -> int | None:
    """The pid of the cluster's nats-server, found by its config file."""
    config = str(data_dir / "nats" / "nats.conf").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if config in cmdline.split(b"\0") and "State:\tZ" not in status:
            return int(entry.name)
    return None


def _find_children(port: int) -> dict[str, int]:
    """The cluster's processes, found by the port they were told to use."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = dict(
                item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item
            )
        except OSError:
            continue
        if b"im_server" not in cmdline:
            continue
        if environ.get(b"IM_API_PORT") == str(port).encode():
            found["api"] = int(entry.name)
        elif (
            environ.get(b"IM_GATEWAY_PORT", b"0").isdigit()
            and port < int(environ.get(b"IM_GATEWAY_PORT", b"0")) <= port + 2
        ):
            found[environ.get(b"IM_NODE_ID", b"?").decode()] = int(entry.name)
    return found


def _server_up(
    port: int, data_dir: Path, *extra: str, gateways: int = 1
) -> tuple[subprocess.Popen[str], list[str], threading.Event]:
    env = {**os.environ, "IM_ARGON2_MEMORY_COST": "1024", "IM_ARGON2_TIME_COST": "1"}
    env.pop("IM_NATS_URL", None)
    env.pop("IM_UPLOAD_DIR", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from im_cli.main import main; main()",
            "server",
            "up",
            "--port",
            str(port),
            "--gateways",
            str(gateways),
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Ctrl-C stops" in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    return process, output, up


def _refused_while_running(port: int, data: Path, tmp_path: Path) -> None:
    """A second `im server up` on the same data dir, or on a port in use, is refused in one line."""
    again = subprocess.run(
        [
            sys.executable,
            "-c",
            "from im_cli.main import main; main()",
            "server",
            "up",
            "--port",
            str(port + 10),
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 5 and again.stderr.startswith("error: another `im server up` is running")
    assert len(again.stderr.strip().splitlines()) == 1
    taken = subprocess.run(
        [
            sys.executable,
            "-c",
            "from im_cli.main import main; main()",
            "server",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert taken.returncode == 5 and f"port {port} on 127.0.0.1 is in use" in taken.stderr
    assert not (tmp_path / "other" / "nats").exists()  # refused before anything started
