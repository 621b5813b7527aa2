"""README's five-minute walkthrough, run as written: `im server up --demo`, then its commands in order,
`im chat` in a pseudo-terminal (the welcome message shows; an answer typed there reaches alice)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from im_server.cluster.natsbin import free_port_block

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- walkthrough:"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a pseudo-terminal")


def _walkthrough() -> list[str]:
    text = README.read_text()
    block = text[text.index(MARKER) :]
    body = block[block.index("```sh\n") + 6 :]
    return [line for line in body[: body.index("```")].splitlines() if line.strip()]


def _screen(data: bytes) -> str:
    """The text of a terminal stream, without its escape sequences."""
    return re.sub(
        r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][A-Z0-9]|[=>NOPc78])",
        "",
        data.decode(errors="ignore"),
    )


def _chat(command: str, env: dict[str, str], answer: str) -> None:
    """Run `im chat` in a pseudo-terminal: wait for the welcome, type ``answer``, quit with Ctrl-Q."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    process = subprocess.Popen(
        ["bash", "-c", command], env=env, stdin=follower, stdout=follower, stderr=follower, start_new_session=True
    )
    os.close(follower)
    seen = b""

    def read_until(pattern: str, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while pattern not in _screen(seen).replace("\n", ""):
            assert time.monotonic() < deadline, f"{pattern!r} not shown:\n{_screen(seen)[-3000:]}"
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:  # the program ended
                    break

    try:
        read_until("Hi Bob!")
        read_until("connected to")
        os.write(leader, answer.encode() + b"\r")
        read_until(answer[-12:] + " ✓")  # sent: shown as my message, not just typed
        os.write(leader, b"\x11")  # Ctrl-Q
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        os.close(leader)


def test_the_readme_walkthrough_works_as_written(tmp_path: Path):
    port = free_port_block(3)
    server_url = f"http://127.0.0.1:{port}"
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "IM_SERVER": server_url,  # the README's commands use the default server; this one is elsewhere
        "IM_CONFIG_DIR": str(tmp_path / "config"),
        "IM_ARGON2_MEMORY_COST": "1024",
        "IM_ARGON2_TIME_COST": "1",
        "TERM": "xterm-256color",
    }
    for name in ("IM_NATS_URL", "IM_PROFILE", "IM_UPLOAD_DIR"):
        env.pop(name, None)
    server = subprocess.Popen(
        ["im", "server", "up", "--demo", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    up = threading.Event()

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            if "Ctrl-C stops" in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert up.wait(90), "the server did not start"
        answer = "hello alice, from the readme"
        lines = _walkthrough()
        assert lines[-1] == "im chat"
        for line in lines:
            if line.startswith("source "):
                continue  # the test runs in the environment already
            if line.endswith(" chat"):
                _chat(line, env, answer)
                continue
            done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
        history = subprocess.run(
            ["bash", "-c", "im --profile alice history bob"], env=env, capture_output=True, text=True, timeout=60
        )
        assert "Hi Bob!" in history.stdout and answer in history.stdout, history.stdout
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
