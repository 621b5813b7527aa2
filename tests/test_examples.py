"""The examples run as written against a real cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.cluster import PASSWORD
from tests.support.inbox import Inbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def test_echo_bot_answers(sqlite_cluster, closing):
    bot_name = f"echo{uuid.uuid4().hex[:8]}"
    user = await sqlite_cluster.user("fan")
    closing.append(user)
    await user.register(bot_name, PASSWORD)
    env = {**os.environ, "IM_SERVER": sqlite_cluster.url, "IM_USERNAME": bot_name, "IM_PASSWORD": PASSWORD}
    bot = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_bot.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert bot.stdout is not None
        assert "is listening" in bot.stdout.readline()
        inbox = Inbox(user)
        await user.send_text(bot_name, "marco")
        answer = await inbox.next(30)
        assert answer.text == "echo: marco"
        await inbox.close()
    finally:
        bot.terminate()
        bot.wait(10)


async def test_send_report_script(sqlite_cluster, closing):
    user = await sqlite_cluster.user("reader")
    closing.append(user)
    script_user = f"ci{uuid.uuid4().hex[:8]}"
    await user.register(script_user, PASSWORD)
    env = {**os.environ, "IM_SERVER": sqlite_cluster.url, "IM_USERNAME": script_user, "IM_PASSWORD": PASSWORD}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "send_report.py"), user.session.user.username, "build 42 passed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "sent #1" in result.stdout and "build 42 passed" in result.stdout
    page = await user.history(result.stdout.split(" to ")[1].split()[0])
    assert [m.content.text for m in page.messages] == ["build 42 passed"]
