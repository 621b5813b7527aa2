"""A command bot: ``/help`` lists the commands, each declared once with its description.

With ``im server up --demo`` running::

    im register helper
    IM_USERNAME=helper IM_PASSWORD=... python examples/command_bot.py

then ``im --profile alice friends add helper`` and ``im --profile alice send helper /help``. In a
group, ``/roll@helper 2d6`` addresses this bot when several bots listen.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from im_sdk.bot import Bot, Command, CommandArgs, FriendRequest, GroupInvitation, MessageEvent, Router

commands = Router("commands")
HELP: dict[str, str] = {}
Reply = Callable[[MessageEvent, CommandArgs], Awaitable[None]]


def command(name: str, description: str) -> Callable[[Reply], Reply]:
    """Register a command handler and its line in /help."""
    HELP[name] = description
    return commands.on_message(Command(name))


@command("help", "list the commands")
async def help_(msg: MessageEvent, command: CommandArgs) -> None:
    await msg.reply("\n".join(f"/{name} - {text}" for name, text in HELP.items()), quote=False)


@command("echo", "/echo TEXT: say TEXT back")
async def echo(msg: MessageEvent, command: CommandArgs) -> None:
    await msg.reply(command.args or "echo what?")


@command("roll", "/roll NdM: roll N dice of M faces (2d6 by default)")
async def roll(msg: MessageEvent, command: CommandArgs) -> None:
    count, _, faces = (command.args or "2d6").lower().partition("d")
    if not (count.isdigit() and faces.isdigit() and 1 <= int(count) <= 20 and 2 <= int(faces) <= 1000):
        await msg.reply("try /roll 2d6 (up to 20 dice of 2 to 1000 faces)")
        return
    dice = [random.randint(1, int(faces)) for _ in range(int(count))]
    await msg.reply(f"{' + '.join(map(str, dice))} = {sum(dice)}")


@command("time", "the time in UTC")
async def time(msg: MessageEvent, command: CommandArgs) -> None:
    await msg.reply(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


@commands.on_message(Command())
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
