"""A command bot: its commands are declared once (with descriptions), ``/help`` lists them, and
``/coffee`` asks with quick-reply buttons.

With ``im server up --demo`` running, as a bot account (an admin runs ``im admin bots create helper``,
which prints its token)::

    IM_BOT_TOKEN=imbot_... python examples/command_bot.py

or as an ordinary account: ``im register helper``, then ``IM_USERNAME=helper IM_PASSWORD=... python
examples/command_bot.py`` (then ``im --profile alice friends add helper``: the bot accepts). Then
``im bots commands helper`` lists the commands, ``im --profile alice send helper /coffee`` asks, and
``im --profile alice press helper SEQ 2`` answers. In a group, ``/roll@helper 2d6`` addresses this bot
when several bots listen.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

from im_sdk.bot import (
    Bot,
    ButtonPress,
    Command,
    CommandArgs,
    FriendRequest,
    GroupInvitation,
    MessageEvent,
    Pressed,
    Router,
)

commands = Router("commands")
DRINKS = {"espresso": "Espresso", "latte": "Latte", "tea": "Tea, please"}


@commands.on_message(Command("echo", description="say TEXT back", args="TEXT"))
async def echo(msg: MessageEvent, command: CommandArgs) -> None:
    await msg.reply(command.args or "echo what?")


@commands.on_message(Command("roll", description="roll N dice of M faces (2d6 by default)", args="NdM"))
async def roll(msg: MessageEvent, command: CommandArgs) -> None:
    count, _, faces = (command.args or "2d6").lower().partition("d")
    if not (count.isdigit() and faces.isdigit() and 1 <= int(count) <= 20 and 2 <= int(faces) <= 1000):
        await msg.reply("try /roll 2d6 (up to 20 dice of 2 to 1000 faces)")
        return
    dice = [random.randint(1, int(faces)) for _ in range(int(count))]
    await msg.reply(f"{' + '.join(map(str, dice))} = {sum(dice)}")


@commands.on_message(Command("time", description="the time in UTC"))
async def time(msg: MessageEvent) -> None:
    await msg.reply(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


@commands.on_message(Command("coffee", description="order a drink (with buttons)"))
async def coffee(msg: MessageEvent) -> None:
    await msg.reply("What would you like?", buttons=list(DRINKS.items()))


@commands.on_event(ButtonPress, Pressed(*DRINKS))
async def order(press: ButtonPress, button: str) -> None:
    await press.answer(f"One {DRINKS[button].lower().removesuffix(', please')}, coming up!")


@commands.on_message(Command())  # not declared (no name); /help is answered by the bot itself
async def unknown(msg: MessageEvent, command: CommandArgs) -> None:
    await msg.reply(f"unknown command /{command.name}; try /help")


bot = Bot.from_env(device="command-bot")
bot.include_router(commands)


@bot.on_event(FriendRequest)
async def befriend(event: FriendRequest) -> None:
    await event.accept()


@bot.on_event(GroupInvitation)
async def join(event: GroupInvitation) -> None:
    if event.pending:
        await event.accept()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bot.run()
