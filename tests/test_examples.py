"""The examples run as written against a real cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from im_schema.social import SendFriendRequest
from im_sdk import MessageEvent, StreamEvent
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


class _FakeModel:
    """A tiny OpenAI-compatible endpoint on 127.0.0.1 (nothing leaves the machine): ``POST
    /v1/chat/completions`` with ``"stream": true`` answers server-sent ``data:`` chunks. The first pieces go
    at once; the rest wait for :attr:`go`, so that a test can look at the message half written."""

    FIRST = ("Once", " upon", " a time")
    REST = (", a bot", " streamed", " its answer.")

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.asked = asyncio.Event()
        self.requests: list[tuple[dict[str, str], dict]] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> _FakeModel:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        self.go.set()

    @staticmethod
    def _chunk(piece: str) -> bytes:
        chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *lines = head.strip().split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        self.requests.append((headers | {"request-line": request_line}, body))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        writer.write(b": a comment line, ignored\n\n")
        for piece in self.FIRST:
            writer.write(self._chunk(piece))
        await writer.drain()
        self.asked.set()
        await self.go.wait()
        for piece in self.REST:
            writer.write(self._chunk(piece))
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        writer.close()


async def test_llm_bot_streams_and_a_viewer_joining_midway_sees_it_grow(im_cluster):
    username, password = await im_cluster.account("llm")
    asker_name, asker_password = await im_cluster.account("asker")
    final = "".join(_FakeModel.FIRST + _FakeModel.REST)
    async with _FakeModel() as model:
        env = im_cluster.env(username, password, LLM_BASE_URL=model.url, LLM_API_KEY="test-key", LLM_MODEL="tiny")
        with running("llm_bot.py", env):
            async with im_cluster.client() as asker, im_cluster.client() as viewer:
                await asker.login(asker_name, asker_password, device="phone")
                bot_user = await asker.get_user(username)
                await asker.request(SendFriendRequest(to=bot_user.id))
                async with asyncio.timeout(30):
                    while not any(f.user.id == bot_user.id for f in await asker.friends.list()):
                        await asyncio.sleep(0.05)
                asked = await asker.send_text(username, "tell me a story")
                async with asyncio.timeout(30):
                    await model.asked.wait()
                    while True:  # the bot opened its answer: stored, half written
                        page = await asker.history(asked.conversation, after=asked.seq)
                        if page.messages:
                            break
                        await asyncio.sleep(0.05)
                [partial] = page.messages
                assert partial.stream == "open" and partial.reply_to is not None
                assert final.startswith(partial.content.text) and partial.content.text != final

                # Another device of the asker connects mid-stream: it gets the text so far, then sees it grow.
                await viewer.login(asker_name, asker_password, device="laptop")
                seen: list[tuple[str, str]] = []
                async with asyncio.timeout(30):
                    async for event in viewer.events(start="all"):
                        if isinstance(event, MessageEvent) and event.sender == bot_user.id:
                            seen.append((event.message.stream or "", event.text or ""))
                            model.go.set()  # the model goes on only now
                        elif isinstance(event, StreamEvent):
                            seen.append((event.state, event.text))
                            if event.done:
                                break
                assert seen[0][0] == "open" and final.startswith(seen[0][1]) and seen[0][1] != final
                assert seen[-1] == ("finished", final)
                [stored] = (await asker.history(asked.conversation, after=asked.seq)).messages
                assert (stored.stream, stored.content.text) == ("finished", final)
    headers, body = model.requests[0]
    assert headers["request-line"] == "POST /v1/chat/completions HTTP/1.1"
    assert headers["authorization"] == "Bearer test-key"
    assert body["stream"] is True and body["model"] == "tiny"
    assert body["messages"] == [{"role": "user", "content": "tell me a story"}]
