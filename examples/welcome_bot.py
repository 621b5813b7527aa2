"""A welcome bot for groups: greets every member who joins a group it is in.

With ``im server up --demo`` running::

    im register greeter
    IM_USERNAME=greeter IM_PASSWORD=... python examples/welcome_bot.py

then, as alice: ``im --profile alice groups create "book club" greeter`` (the bot accepts the
invitation) and ``im --profile alice groups invite g:1 bob``: once bob joins, the bot says hello.
"""

from __future__ import annotations

import logging

from im_sdk.bot import Bot, FriendRequest, GroupInvitation, MembersJoined

bot = Bot.from_env(device="welcome-bot")


@bot.on_event(GroupInvitation)
async def join(event: GroupInvitation) -> None:
    if event.pending:
        await event.accept()


@bot.on_event(FriendRequest)
async def befriend(event: FriendRequest) -> None:
    await event.accept()


@bot.on_event(MembersJoined)
async def welcome(event: MembersJoined) -> None:
    me = bot.me.id if bot.me else None
    names = [(await bot.client.get_user(user)).display_name for user in event.users if user != me]
    if names:
        await event.answer(f"Welcome, {', '.join(names)}! Say hi to everyone.")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bot.run()
