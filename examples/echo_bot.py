"""An echo bot: answers every direct text message with the same text.

With ``im server up --demo`` running, in another terminal::

    im register echo                       # choose a password
    IM_USERNAME=echo IM_PASSWORD=... python examples/echo_bot.py

then, as alice: ``im --profile alice friends add echo`` (the bot accepts: direct messages need
friendship) and ``im --profile alice send echo hello``. ``IM_SERVER`` defaults to
``http://127.0.0.1:8080``; with ``IM_STATE_PATH=echo.sqlite3`` a restarted bot answers every message
exactly once, even after a crash.
"""

from __future__ import annotations

import logging

from im_sdk.bot import Bot, FriendRequest, MessageEvent, direct

bot = Bot.from_env(device="echo-bot")


@bot.on_event(FriendRequest)
async def befriend(event: FriendRequest) -> None:
    await event.accept()


@bot.on_message(direct)
async def echo(msg: MessageEvent) -> None:
    if msg.text is not None:
        await msg.reply(f"echo: {msg.text}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bot.run()
