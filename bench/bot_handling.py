"""How fast a bot handles messages, with and without exactly-once state (``state_path``).

    python bench/bot_handling.py [MESSAGES] [SENDERS]

Starts a local cluster (``im_sdk.testing.LocalCluster``), runs an echo bot in this process, has
SENDERS users send MESSAGES messages in all, and prints handled messages per second once every reply
is stored (sends and replies included), for a bot without state and one with a state file.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from im_sdk.bot import Bot, MessageEvent
from im_sdk.testing import LocalCluster

SETTINGS = {"IM_SEND_RATE": "100000", "IM_SEND_BURST": "100000", "IM_DM_REQUIRES_FRIENDSHIP": "false"}


async def run(cluster: LocalCluster, messages: int, senders: int, state_path: Path | None) -> float:
    username, password = await cluster.account("bench")
    bot = Bot(cluster.url, username=username, password=password, state_path=state_path)
    done = asyncio.Event()

    @bot.on_message()
    async def echo(msg: MessageEvent) -> None:
        await msg.reply(msg.text or "")
        if bot.handled + 1 >= messages:
            done.set()

    users = [await cluster.user("sender") for _ in range(senders)]
    async with bot:
        await bot.wait_connected()
        started = time.perf_counter()

        async def send(user: object, count: int) -> None:
            for n in range(count):
                await user.send_text(username, f"m{n}")  # type: ignore[attr-defined]

        await asyncio.gather(*(send(user, messages // senders) for user in users))
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - started
    for user in users:
        await user.aclose()  # type: ignore[attr-defined]
    return messages / elapsed


async def main(messages: int, senders: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        cluster = LocalCluster(Path(directory) / "cluster", settings=SETTINGS).start()
        try:
            plain = await run(cluster, messages, senders, None)
            durable = await run(cluster, messages, senders, Path(directory) / "bot.sqlite3")
        finally:
            cluster.stop()
    print(f"{messages} messages from {senders} senders, each answered by the bot:")
    print(f"  without state_path: {plain:.0f} messages/s")
    print(f"  with state_path (exactly-once): {durable:.0f} messages/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 400, int(sys.argv[2]) if len(sys.argv) > 2 else 8))
