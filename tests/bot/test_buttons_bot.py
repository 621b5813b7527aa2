"""A bot account (``Bot(token=...)``) with buttons and declared commands, on a default-settings cluster:
presses round-trip, a press made while the bot was away is handled once after it starts again, the
commands are declared at start and ``/help`` is answered."""

from __future__ import annotations

import asyncio

import pytest

from im_schema.admin import CreateBotRequest
from im_schema.presses import BotCommand, SetUserCommandsRequest
from im_sdk import AsyncClient
from im_sdk.bot import Bot, ButtonPress, Command, CommandArgs, MessageEvent, Pressed
from im_server.services.admin import bootstrap_admin
from tests.support.cluster import FAST, TestCluster
from tests.support.inbox import Inbox


@pytest.fixture
def default_cluster(make_cluster) -> TestCluster:
    return make_cluster(gateways=1, dm_requires_friendship=True)


async def _bot_token(cluster: TestCluster, closing: list) -> tuple[str, str, AsyncClient]:
    root = await cluster.user("root")
    closing.append(root)
    await bootstrap_admin(cluster.settings.db_url, root.session.user.username, None)
    created = await root.request(CreateBotRequest(username="pollbot", display_name="Poll"))
    return created.user.username, created.token, root


def _poll_bot(cluster: TestCluster, token: str, state_path, handled: list[tuple[int, str]]) -> Bot:
    bot = Bot(cluster.url, token=token, state_path=state_path, backoff=FAST)

    @bot.on_message(Command("vote", description="start a vote", args="QUESTION"))
    async def vote(msg: MessageEvent, command: CommandArgs) -> None:
        await msg.reply(command.args or "Yes or no?", buttons=[("yes", "Yes"), ("no", "No")])

    @bot.on_event(ButtonPress, Pressed("yes", "no"))
    async def voted(event: ButtonPress, button: str) -> None:
        handled.append((event.press.id, button))
        await event.answer(f"{event.user_id} voted {button}")

    return bot


async def _texts_from(client: AsyncClient, conversation: str, sender: int) -> list[str]:
    page = await client.history(conversation, after=0)
    return [m.content.text for m in page.messages if m.sender == sender and m.content.kind == "text"]


async def test_bot_buttons_commands_and_a_press_made_while_it_was_away(default_cluster, closing, tmp_path):
    username, token, root = await _bot_token(default_cluster, closing)
    alice = await default_cluster.user("alice")
    closing.append(alice)
    inbox = Inbox(alice)
    handled: list[tuple[int, str]] = []
    state = tmp_path / "bot.sqlite3"

    bot = _poll_bot(default_cluster, token, state, handled)
    async with bot:
        await bot.wait_connected()
        assert bot.me is not None and bot.me.is_bot
        declared = await alice.commands(username)
        assert [(c.name, c.args) for c in declared] == [("help", None), ("vote", "QUESTION")]
        await alice.send_text(username, "/help")
        help_text = (await inbox.next()).text
        assert help_text == "/help - list the commands\n/vote QUESTION - start a vote"
        await alice.send_text(username, "/vote Pizza tonight?")
        question = await inbox.next()
        assert question.text == "Pizza tonight?" and [b.id for b in question.buttons] == ["yes", "no"]
        await alice.press(question.message, "yes")
        answer = await inbox.next()
        assert answer.text == f"{alice.session.user.id} voted yes"
        async with asyncio.timeout(10):
            while (await bot.client.pending_presses()).presses:  # acknowledged after the handler
                await asyncio.sleep(0.02)

    # The bot is away: the press is kept for it, and handled once it is back.
    away = await alice.press(question.message, "no")
    assert handled == [(handled[0][0], "yes")]
    bot = _poll_bot(default_cluster, token, state, handled)
    async with bot:
        await bot.wait_connected()
        assert (await inbox.next()).text == f"{alice.session.user.id} voted no"
        async with asyncio.timeout(10):
            while (await bot.client.pending_presses()).presses:
                await asyncio.sleep(0.02)
    assert [item[1] for item in handled] == ["yes", "no"] and handled[1][0] == away.id
    texts = await _texts_from(alice, question.conversation, question.sender)
    assert texts.count(f"{alice.session.user.id} voted no") == 1

    # An admin may set a bot's commands too.
    listed = await root.request(
        SetUserCommandsRequest(bot=username, commands=[BotCommand(name="vote", description="vote")])
    )
    assert [c.name for c in listed.commands] == ["vote"]


async def test_an_author_help_wins_and_from_env_reads_the_bot_token(sqlite_cluster):
    bot = Bot.from_env({"IM_BOT_TOKEN": "imbot_x", "IM_SERVER": sqlite_cluster.url})
    assert bot._bot_token == "imbot_x" and bot.client._state.access_token is None

    @bot.on_message(Command("help", "start", description="how to use me"))
    async def help_(msg: MessageEvent) -> None: ...

    @bot.on_message(Command("Bad Name!") | Command("echo"))
    async def echo(msg: MessageEvent) -> None: ...

    commands, default_help = bot._declared()
    assert not default_help
    assert [(c.name, c.description) for c in commands] == [("help", "how to use me"), ("echo", "/echo")]
    await bot.client.aclose()


async def test_a_press_whose_handler_was_interrupted_is_handled_again_without_a_second_reply(
    sqlite_cluster, closing, tmp_path
):
    _, token, _ = await _bot_token(sqlite_cluster, closing)
    alice = await sqlite_cluster.user("alice")
    closing.append(alice)
    runs: list[int] = []
    started = asyncio.Event()

    def build() -> Bot:
        bot = Bot(sqlite_cluster.url, token=token, state_path=tmp_path / "bot.sqlite3", backoff=FAST)
        bot.shutdown_timeout = 0.2

        @bot.on_event(ButtonPress)
        async def slow(event: ButtonPress) -> None:
            runs.append(event.press.id)
            await event.answer("noted")
            if len(runs) == 1:
                started.set()
                await asyncio.Event().wait()  # interrupted here by the first stop
            await event.answer("done")

        return bot

    bot = build()
    async with bot:
        question = await bot.send_text(alice.session.user.id, "Ready?", buttons=[("go", "Go")])
        press = await alice.press(question, "go")
        await asyncio.wait_for(started.wait(), 10)
    bot = build()
    async with bot:
        async with asyncio.timeout(10):
            while len(runs) < 2 or (await bot.client.pending_presses()).presses:
                await asyncio.sleep(0.02)
    assert runs == [press.id, press.id]
    texts = await _texts_from(alice, question.conversation, question.sender)
    assert texts == ["Ready?", "noted", "done"]  # "noted" once: the second run's send was recognised
