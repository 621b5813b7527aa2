"""A Bot against a real cluster: handlers, commands, notices, group events, errors, scheduling, shutdown."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from im_schema.social import SendFriendRequest
from im_sdk import AsyncClient
from im_sdk.bot import (
    Bot,
    Command,
    CommandArgs,
    FriendRequest,
    MembersJoined,
    MessageEvent,
    RecallEvent,
    Text,
    direct,
    group,
)
from tests.support.cluster import FAST, PASSWORD, TestCluster
from tests.support.inbox import Inbox


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


@pytest.fixture
def default_cluster(make_cluster) -> TestCluster:
    """A cluster with the server's default social rules (direct messages need friendship)."""
    return make_cluster(gateways=1, dm_requires_friendship=True, group_invites_default="friends")


async def make_bot(cluster: TestCluster, **kwargs) -> Bot:
    name = f"bot{uuid.uuid4().hex[:8]}"
    async with AsyncClient(cluster.url) as client:
        await client.register(name, PASSWORD)
    return Bot(cluster.url, username=name, password=PASSWORD, backoff=FAST, **kwargs)


async def next_text(inbox: Inbox) -> MessageEvent:
    """The next text message (system messages skipped)."""
    while True:
        event = await inbox.next()
        if event.text is not None:
            return event


async def until(predicate, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_messages_commands_and_replies(sqlite_cluster, closing):
    bot = await make_bot(sqlite_cluster)
    seen: list[str] = []

    @bot.on_message(Command("weather"))
    async def weather(msg: MessageEvent, command: CommandArgs) -> None:
        await msg.reply(f"sunny in {command.args}")

    @bot.on_message(Text("ping") & direct)
    async def ping(msg: MessageEvent) -> None:
        await msg.reply("pong", quote=False)

    @bot.on_message()
    async def rest(msg: MessageEvent) -> None:
        seen.append(msg.text or "")

    user = await sqlite_cluster.user("fan")
    closing.append(user)
    inbox = Inbox(user)
    async with bot:
        assert bot.me is not None
        sent = await user.send_text(bot.me.username, "/weather paris")
        answer = await inbox.next()
        assert answer.text == "sunny in paris" and answer.message.reply_to is not None
        assert answer.message.reply_to.seq == sent.seq
        await user.send_text(bot.me.username, "ping")
        answer = await inbox.next()
        assert answer.text == "pong" and answer.message.reply_to is None
        await user.send_text(bot.me.username, "something else")
        await until(lambda: seen == ["something else"])
    await inbox.close()


async def test_friend_requests_before_and_after_start_on_a_default_server(default_cluster, closing):
    bot = await make_bot(default_cluster)

    @bot.on_event(FriendRequest)
    async def befriend(event: FriendRequest) -> None:
        await event.accept()

    @bot.on_message(direct)
    async def echo(msg: MessageEvent) -> None:
        await msg.reply(f"echo: {msg.text}")

    early = await default_cluster.user("early")
    late = await default_cluster.user("late")
    closing.extend([early, late])
    bot_user = await early.get_user(bot._username)  # type: ignore[arg-type]
    await early.request(SendFriendRequest(to=bot_user.id))  # while the bot is away: listed at start
    async with bot:
        await bot.wait_connected()
        early_inbox, late_inbox = Inbox(early), Inbox(late)
        await late.request(SendFriendRequest(to=bot_user.id))  # live: a notice
        for client, inbox in ((early, early_inbox), (late, late_inbox)):
            async with asyncio.timeout(10):
                while not [f for f in await client.friends.list() if f.user.id == bot_user.id]:
                    await asyncio.sleep(0.02)
            await client.send_text(bot_user.username, "hello")
            assert (await inbox.next()).text == "echo: hello"
            await inbox.close()


async def test_group_events_and_recalls(sqlite_cluster, closing):
    bot = await make_bot(sqlite_cluster)
    recalled: list[int] = []

    @bot.on_event(MembersJoined)
    async def welcome(event: MembersJoined) -> None:
        names = [str(user) for user in event.users if bot.me is not None and user != bot.me.id]
        if names:
            await event.answer(f"welcome {', '.join(names)}")

    @bot.on_event(RecallEvent)
    async def on_recall(event: RecallEvent) -> None:
        recalled.append(event.seq)

    @bot.on_message(group)
    async def in_group(msg: MessageEvent) -> None:
        await msg.reply("seen")

    owner = await sqlite_cluster.user("owner")
    newcomer = await sqlite_cluster.user("newcomer")
    closing.extend([owner, newcomer])
    async with bot:
        assert bot.me is not None
        room = await owner.groups.create("room", [bot.me.id])
        inbox = Inbox(owner)
        await owner.groups.invite(room.id, [newcomer.session.user.id])
        answer = await next_text(inbox)
        assert answer.text == f"welcome {newcomer.session.user.id}"
        sent = await owner.send_text(room.conversation, "hi bot")
        assert (await next_text(inbox)).text == "seen"
        await owner.recall(room.conversation, sent.seq)
        await until(lambda: recalled == [sent.seq])
        await inbox.close()


async def test_one_failing_handler_does_not_end_the_bot(sqlite_cluster, closing):
    bot = await make_bot(sqlite_cluster)
    errors: list[str] = []

    @bot.on_message(Text("fail"))
    async def fail(msg: MessageEvent) -> None:
        raise RuntimeError("handler bug")

    @bot.on_message()
    async def fine(msg: MessageEvent) -> None:
        await msg.reply("fine")

    @bot.on_error
    async def report(error: BaseException, event: object, data: dict) -> None:
        errors.append(str(error))

    user = await sqlite_cluster.user("user")
    closing.append(user)
    inbox = Inbox(user)
    async with bot:
        assert bot.me is not None
        await user.send_text(bot.me.username, "fail")
        await user.send_text(bot.me.username, "after")
        assert (await inbox.next()).text == "fine"
        assert errors == ["handler bug"]
    await inbox.close()


async def test_conversations_run_concurrently_each_in_order(sqlite_cluster, closing):
    bot = await make_bot(sqlite_cluster)
    release = asyncio.Event()
    order: list[tuple[str, str]] = []

    @bot.on_message()
    async def handler(msg: MessageEvent) -> None:
        if msg.text == "block":
            await release.wait()
        order.append((msg.conversation, msg.text or ""))

    slow, fast = await sqlite_cluster.user("slow"), await sqlite_cluster.user("fast")
    closing.extend([slow, fast])
    async with bot:
        assert bot.me is not None
        await slow.send_text(bot.me.username, "block")
        await slow.send_text(bot.me.username, "after block")
        for n in range(3):
            await fast.send_text(bot.me.username, f"fast {n}")
        await until(lambda: len(order) == 3)  # the other conversation is not held up
        assert [text for _, text in order] == ["fast 0", "fast 1", "fast 2"]
        release.set()
        await until(lambda: len(order) == 5)
        assert [text for _, text in order[3:]] == ["block", "after block"]  # in order within one


async def test_stop_lets_running_handlers_finish(sqlite_cluster, closing):
    bot = await make_bot(sqlite_cluster)
    started, finished = asyncio.Event(), asyncio.Event()

    @bot.on_message()
    async def handler(msg: MessageEvent) -> None:
        started.set()
        await asyncio.sleep(0.05)
        await msg.reply("done")
        finished.set()

    user = await sqlite_cluster.user("user")
    closing.append(user)
    await bot.start()
    assert bot.me is not None
    await user.send_text(bot.me.username, "work")
    async with asyncio.timeout(10):
        await started.wait()
    await bot.stop()
    assert finished.is_set()
    page = await user.history(f"d:{min(user.session.user.id, bot.me.id)}:{max(user.session.user.id, bot.me.id)}")
    assert [m.content.text for m in page.messages] == ["work", "done"]


def test_configuration_from_the_environment():
    bot = Bot.from_env({"IM_SERVER": "http://example.test:9", "IM_USERNAME": "b", "IM_PASSWORD": "p"}, device="d")
    assert bot.client.server_url == "http://example.test:9" and bot._device == "d"
    bot = Bot.from_env({"IM_TOKEN": "t"})
    assert bot.client.server_url == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="username and password"):
        Bot.from_env({})
    with pytest.raises(ValueError, match="concurrency"):
        Bot(username="a", password="b", concurrency=0)


async def test_edits_reads_leaves_join_requests_and_mentions(sqlite_cluster, closing):
    from im_sdk.bot import EditEvent, JoinRequest, MemberLeft, Mentioned, ReadEvent

    bot = await make_bot(sqlite_cluster)
    seen: list[object] = []

    @bot.on_event(EditEvent)
    async def edited(event: EditEvent) -> None:
        seen.append(("edit", event.text))

    @bot.on_event(ReadEvent, lambda event: bot.me is not None and event.user_id != bot.me.id)
    async def read(event: ReadEvent) -> None:
        seen.append(("read", event.read_seq))

    @bot.on_event(MemberLeft)
    async def left(event: MemberLeft) -> None:
        seen.append(("left", event.user))

    @bot.on_event(JoinRequest)
    async def approve(event: JoinRequest) -> None:
        await event.approve()
        seen.append(("approved", event.request.user.id))

    @bot.on_message(Mentioned() & group)
    async def mentioned(msg: MessageEvent) -> None:
        await msg.reply("you called?")

    owner, member, stranger = [await sqlite_cluster.user(n) for n in ("owner", "member", "stranger")]
    closing.extend([owner, member, stranger])
    async with bot:
        assert bot.me is not None
        await bot.wait_connected()
        sent = await owner.send_text(bot.me.username, "tpyo")
        await owner.edit(sent.conversation, sent.seq, "typo")
        await until(lambda: ("edit", "typo") in seen)
        reply = await bot.send_text(sent.conversation, "noted")
        await owner.mark_read(sent.conversation, reply.seq)
        await until(lambda: ("read", reply.seq) in seen)

        room = await owner.groups.create("room", [bot.me.id, member.session.user.id], join_policy="approval")
        await owner.groups.add_admin(room.id, bot.me.id)
        await member.groups.leave(room.id)
        await until(lambda: ("left", member.session.user.id) in seen)
        await stranger.groups.join(room.id, "let me in")
        await until(lambda: ("approved", stranger.session.user.id) in seen)
        inbox = Inbox(owner)
        await owner.send_text(room.conversation, "@bot help", mentions=[bot.me.id])
        answer = await next_text(inbox)
        while answer.conversation != room.conversation:
            answer = await next_text(inbox)
        assert answer.text == "you called?"
        await inbox.close()
