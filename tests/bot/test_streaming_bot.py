"""Streaming replies from a bot: ``msg.stream_reply()`` and ``bot.reply_stream(msg)`` inside handlers, with
the idempotent send id of the message handled on the stream's open."""

from __future__ import annotations

import asyncio

from im_sdk.bot import HandlingContext, MessageEvent, StreamEvent, Text
from tests.bot.test_bot import make_bot
from tests.support.inbox import Inbox


async def test_handlers_stream_their_replies(sqlite_cluster, closing):
    bot = await make_bot(sqlite_cluster)
    release = asyncio.Event()

    @bot.on_message(Text("slow"))
    async def slow(msg: MessageEvent) -> None:
        async with msg.stream_reply(interval=0) as stream:
            await stream.append("thinking")
            await release.wait()  # the user looks while the answer is half written
            await stream.append(" done")

    @bot.on_message(Text("quick"))
    async def quick(msg: MessageEvent) -> None:
        async with bot.reply_stream(msg, quote=False) as stream:
            for piece in ("a", "b", "c"):
                await stream.append(piece)

    user = await sqlite_cluster.user("fan")
    closing.append(user)
    inbox = Inbox(user)
    async with bot:
        assert bot.me is not None
        asked = await user.send_text(bot.me.username, "slow")
        opened = await inbox.next()
        assert (opened.text, opened.message.stream) == ("thinking", "open")
        assert opened.message.reply_to is not None and opened.message.reply_to.seq == asked.seq
        # The open carries the send id derived from the message handled: a rerun after a crash reuses it.
        expected = HandlingContext(bot.me.id, asked.conversation, asked.seq).next_send_id()
        assert opened.message.client_msg_id == expected
        release.set()
        async with asyncio.timeout(10):
            while True:
                event = await inbox.event(StreamEvent)
                if event.done:
                    break
        assert (event.seq, event.text, event.state) == (opened.seq, "thinking done", "finished")

        await user.send_text(bot.me.username, "quick")
        answer = await inbox.next()
        assert answer.message.reply_to is None
        async with asyncio.timeout(10):
            while True:
                [stored] = (await user.history(answer.conversation, after=answer.seq - 1, limit=1)).messages
                if stored.stream == "finished":
                    break
                await asyncio.sleep(0.02)
        assert stored.content.text == "abc"
    await inbox.close()
