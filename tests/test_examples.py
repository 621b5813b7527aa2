"""The examples run as written against a real cluster."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.cluster import PASSWORD

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextlib.contextmanager
def running(example: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """An example bot as its own process (as its docstring says to run it); SIGTERM stops it cleanly."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / example)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, errors = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, errors


# The example bots run on the plugin's cluster (im_sdk.testing), which keeps the server's default
# settings: direct messages need friendship, and users are invited to groups rather than added.


async def test_echo_bot_befriends_and_answers(im_cluster):
    username, password = await im_cluster.account("echo")
    with running("echo_bot.py", im_cluster.env(username, password)):
        async with im_cluster.chat(username) as chat:
            assert await chat.ask("marco", within=30) == "echo: marco"


async def test_command_bot_help_and_commands(im_cluster):
    username, token = await im_cluster.bot_account("helper")  # a bot account, run with IM_BOT_TOKEN
    with running("command_bot.py", im_cluster.env(username, IM_BOT_TOKEN=token)):
        async with im_cluster.chat(username, befriend=False) as chat:  # bots need no friendship
            help_text = await chat.ask("/help", within=30)
            assert "/help - list the commands" in help_text and "/roll NdM - roll N dice" in help_text
            declared = await chat.client.commands(username)  # declared by the bot at start
            assert [c.name for c in declared] == ["help", "echo", "roll", "time", "coffee"]
            await chat.send("/coffee")
            question = await chat.reply()
            assert [b.id for b in question.content.buttons] == ["espresso", "latte", "tea"]
            await chat.client.press(question, "tea")
            assert await chat.reply_text() == "One tea, coming up!"
            assert await chat.ask("/echo hello there") == "hello there"
            dice, total = (await chat.ask("/roll 3d2")).split(" = ")
            assert sum(map(int, dice.split(" + "))) == int(total) and 3 <= int(total) <= 6
            assert (await chat.ask("/roll 3d1")).startswith("try /roll 2d6")
            assert await chat.ask("/nope") == "unknown command /nope; try /help"


async def test_welcome_bot_greets_who_joins(im_cluster):
    username, password = await im_cluster.account("greeter")
    owner, newcomer = await im_cluster.user("owner"), await im_cluster.user("newcomer")
    with running("welcome_bot.py", im_cluster.env(username, password)):
        async with owner, newcomer:
            bot_user = await owner.get_user(username)
            group = await owner.groups.create("book club", [bot_user.id])  # the bot is invited, and accepts
            async with asyncio.timeout(30):
                while bot_user.id not in [m.user.id for m in (await owner.groups.members(group.id)).members]:
                    await asyncio.sleep(0.05)
            await owner.groups.invite(group.id, [newcomer.session.user.id])
            [invitation] = await newcomer.groups.invitations()
            await newcomer.groups.accept(invitation.id)
            async with asyncio.timeout(30):
                while True:
                    page = await newcomer.history(group.conversation)
                    texts = [m.content.text for m in page.messages if m.sender == bot_user.id]
                    if texts:
                        break
                    await asyncio.sleep(0.05)
            assert texts == [f"Welcome, {newcomer.session.user.display_name}! Say hi to everyone."]


async def test_archive_bot_saves_files(im_cluster, tmp_path):
    username, password = await im_cluster.account("archivist")
    archive = tmp_path / "archive"
    with running("archive_bot.py", im_cluster.env(username, password, IM_ARCHIVE_DIR=str(archive))):
        async with im_cluster.chat(username) as chat:
            await chat.send_file(b"quarterly numbers\n", name="report.txt")
            assert await chat.reply_text(30) == "archived report.txt (18 bytes)"
            assert (archive / chat.conversation.replace(":", "_") / "report.txt").read_bytes() == b"quarterly numbers\n"


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
