"""A file-archiving bot: saves every image, file, voice note and video it receives, by conversation.

With ``im server up --demo`` running::

    im register archivist
    IM_USERNAME=archivist IM_PASSWORD=... IM_ARCHIVE_DIR=archive python examples/archive_bot.py

then ``im --profile alice friends add archivist`` and ``im --profile alice send archivist --file
report.pdf``: the file lands in ``archive/d_1_3/`` and the bot answers with its name and size. It
also archives what is posted in groups it is invited to.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from im_sdk.bot import Bot, FriendRequest, GroupInvitation, Kind, MessageEvent

ARCHIVE = Path(os.environ.get("IM_ARCHIVE_DIR", "archive"))
bot = Bot.from_env(device="archive-bot")


@bot.on_event(FriendRequest)
async def befriend(event: FriendRequest) -> None:
    await event.accept()


@bot.on_event(GroupInvitation)
async def join(event: GroupInvitation) -> None:
    if event.pending:
        await event.accept()


@bot.on_message(Kind(*Kind.MEDIA))
async def archive(msg: MessageEvent) -> None:
    folder = ARCHIVE / msg.conversation.replace(":", "_")
    folder.mkdir(parents=True, exist_ok=True)
    # The download checks the bytes against the blob's SHA-256 before the file appears.
    path = await bot.client.download(msg.message, folder)
    await msg.reply(f"archived {path.name} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bot.run()
