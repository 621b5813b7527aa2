"""An echo bot: answers every text message it receives.

    IM_SERVER=http://127.0.0.1:8080 IM_USERNAME=echo IM_PASSWORD=secret python examples/echo_bot.py

The account must exist (``im register echo``). The bot starts with what is unread, reconnects by
itself, never answers the same message twice while it runs, and marks what it answered as read so that
a restarted bot picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os

from im_sdk import AsyncClient


async def main() -> None:
    async with AsyncClient(os.environ.get("IM_SERVER", "http://127.0.0.1:8080")) as client:
        session = await client.login(os.environ["IM_USERNAME"], os.environ["IM_PASSWORD"], device="echo-bot")
        print(f"echo bot {session.user.username} is listening", flush=True)
        async for event in client.messages():
            if event.text is not None:
                await event.reply(f"echo: {event.text}")
            await client.mark_read(event.conversation, event.seq)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
