"""Exactly-once handling: a bot process killed with SIGKILL in the middle of a handler, then restarted,
finishes that handler once and its replies appear once in history (default server settings)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from im_sdk import AsyncClient
from im_sdk.bot import HandlingContext
from tests.support.cluster import PASSWORD

CRASH_BOT = Path(__file__).with_name("crash_bot.py")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def until(predicate, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def test_send_ids_depend_on_the_message_and_the_rank_only():
    a, b = HandlingContext(1, "d:1:2", 7), HandlingContext(1, "d:1:2", 7)
    assert [a.next_send_id(), a.next_send_id()] == [b.next_send_id(), b.next_send_id()]
    ids = {HandlingContext(1, "d:1:2", 7).next_send_id(), HandlingContext(2, "d:1:2", 7).next_send_id()}
    ids |= {HandlingContext(1, "d:1:3", 7).next_send_id(), HandlingContext(1, "d:1:2", 8).next_send_id()}
    assert len(ids) == 4
    assert all(8 <= len(i) <= 64 and i.isalnum() for i in ids)


async def test_a_bot_killed_mid_handler_handles_the_message_once_after_restart(sqlite_cluster, closing, tmp_path):
    name = f"bot{uuid.uuid4().hex[:8]}"
    user = await sqlite_cluster.user("asker")
    closing.append(user)
    await user.register(name, PASSWORD)
    async with AsyncClient(sqlite_cluster.url) as client:
        await client.login(name, PASSWORD)
        bot_id = client.session.user.id  # type: ignore[union-attr]
    conversation = f"d:{min(bot_id, user.session.user.id)}:{max(bot_id, user.session.user.id)}"
    control = tmp_path / "control"
    control.mkdir()
    env = {
        **os.environ,
        "IM_SERVER": sqlite_cluster.url,
        "IM_USERNAME": name,
        "IM_PASSWORD": PASSWORD,
        "IM_STATE_PATH": str(tmp_path / "bot-state.sqlite3"),
    }

    def start_bot() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(CRASH_BOT), str(control)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "bot.log").open("a"),
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        return process

    async def texts() -> list[str]:
        page = await user.history(conversation, limit=100)
        return [m.content.text for m in page.messages if m.sender == bot_id]

    bot = start_bot()
    try:
        await user.send_text(name, "job")
        await until(lambda: lines(control / "started") == ["job"])
        async with asyncio.timeout(30):
            while await texts() != ["first reply to job"]:
                await asyncio.sleep(0.02)
        # Between receiving the message and finishing its handler: killed without any cleanup.
        bot.send_signal(signal.SIGKILL)
        bot.wait(10)
        assert lines(control / "finished") == []
        (control / "go-job").touch()
        bot = start_bot()
        await until(lambda: lines(control / "finished") == ["job"])
        assert lines(control / "started") == ["job", "job"]  # run again, because it had not finished
        # The reply sent before the kill was recognised, not sent again.
        assert await texts() == ["first reply to job", "second reply to job"]

        # A handled message is not handled again by a restarted bot; the next one is handled once.
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(30) == 0
        bot = start_bot()
        (control / "go-next").touch()
        await user.send_text(name, "next")
        await until(lambda: lines(control / "finished") == ["job", "next"])
        bot.send_signal(signal.SIGKILL)  # after the handler finished: nothing is left to redo
        bot.wait(10)
        bot = start_bot()
        (control / "go-last").touch()
        await user.send_text(name, "last")
        await until(lambda: lines(control / "finished") == ["job", "next", "last"])
        assert lines(control / "started") == ["job", "job", "next", "last"]
        assert await texts() == [
            "first reply to job",
            "second reply to job",
            "first reply to next",
            "second reply to next",
            "first reply to last",
            "second reply to last",
        ]
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait(10)


async def test_a_bot_killed_mid_stream_finishes_the_same_message_after_restart(sqlite_cluster, closing, tmp_path):
    name = f"bot{uuid.uuid4().hex[:8]}"
    user = await sqlite_cluster.user("asker")
    closing.append(user)
    await user.register(name, PASSWORD)
    control = tmp_path / "control"
    control.mkdir()
    env = {
        **os.environ,
        "IM_SERVER": sqlite_cluster.url,
        "IM_USERNAME": name,
        "IM_PASSWORD": PASSWORD,
        "IM_STATE_PATH": str(tmp_path / "bot-state.sqlite3"),
    }

    def start_bot() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(CRASH_BOT), str(control)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "bot.log").open("a"),
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        return process

    asked = await user.send_text(name, "stream")
    bot = start_bot()
    try:

        async def replies() -> list:
            return (await user.history(asked.conversation, after=asked.seq)).messages

        async with asyncio.timeout(30):
            while [(m.stream, m.content.text) for m in await replies()] != [("open", "part one")]:
                await asyncio.sleep(0.02)
        bot.send_signal(signal.SIGKILL)  # mid-stream, without any cleanup
        bot.wait(10)
        (control / "go-stream").touch()
        bot = start_bot()
        await until(lambda: lines(control / "finished") == ["stream"])
        assert lines(control / "started") == ["stream", "stream"]
        [reply] = await replies()  # the same message, finished once
        assert (reply.stream, reply.content.text) == ("finished", "part one, part two")
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait(10)
