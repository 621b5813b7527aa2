"""How fast a bot handles button presses, against messages, in the same run.

    python bench/button_presses.py [EVENTS] [USERS]

Starts a local cluster (``im_sdk.testing.LocalCluster``) and a bot (with a state file) in this process.
USERS users first send EVENTS messages in all, which the bot answers; then they press EVENTS buttons in
all (of messages the bot sent them, 8 buttons each), and the bot answers each press and acknowledges it.
Prints events handled per second for both (until every answer is stored) and their ratio.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from im_sdk.bot import Bot, ButtonPress, MessageEvent
from im_sdk.testing import LocalCluster

SETTINGS = {
    "IM_SEND_RATE": "100000",
    "IM_SEND_BURST": "100000",
    "IM_PRESS_RATE": "100000",
    "IM_PRESS_BURST": "100000",
    "IM_DM_REQUIRES_FRIENDSHIP": "false",
}
BUTTONS = [(f"b{n}", f"Button {n}") for n in range(8)]


async def run(cluster: LocalCluster, events: int, users_count: int, state_path: Path) -> tuple[float, float]:
    username, token = await cluster.bot_account("bench")
    bot = Bot(cluster.url, token=token, state_path=state_path)
    target = 0
    done = asyncio.Event()

    @bot.on_message()
    async def echo(msg: MessageEvent) -> None:
        await msg.reply(msg.text or "")
        if bot.handled + 1 >= target:
            done.set()

    @bot.on_event(ButtonPress)
    async def pressed(event: ButtonPress) -> None:
        await event.answer(event.button, quote=False)
        if bot.handled + 1 >= target:
            done.set()

    users = [await cluster.user("presser") for _ in range(users_count)]
    per_user = events // users_count
    async with bot:
        await bot.wait_connected()

        async def send(user: object) -> None:
            for n in range(per_user):
                await user.send_text(username, f"m{n}")  # type: ignore[attr-defined]

        target = per_user * users_count
        started = time.perf_counter()
        await asyncio.gather(*(send(user) for user in users))
        await asyncio.wait_for(done.wait(), 300)
        messages_rate = target / (time.perf_counter() - started)

        questions = {}
        for user in users:
            me = user.session.user  # type: ignore[attr-defined]
            questions[me.id] = [
                await bot.send_text(me.id, f"q{n}", buttons=BUTTONS) for n in range(-(-per_user // len(BUTTONS)))
            ]

        async def press(user: object) -> None:
            mine = questions[user.session.user.id]  # type: ignore[attr-defined]
            for n in range(per_user):
                await user.press(mine[n // len(BUTTONS)], BUTTONS[n % len(BUTTONS)][0])  # type: ignore[attr-defined]

        done.clear()
        target = bot.handled + per_user * users_count
        started = time.perf_counter()
        await asyncio.gather(*(press(user) for user in users))
        await asyncio.wait_for(done.wait(), 300)
        while (await bot.client.pending_presses()).presses:  # every press acknowledged too
            await asyncio.sleep(0.01)
        presses_rate = per_user * users_count / (time.perf_counter() - started)
    for user in users:
        await user.aclose()  # type: ignore[attr-defined]
    return messages_rate, presses_rate


async def main(events: int, users: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        cluster = LocalCluster(Path(directory) / "cluster", settings=SETTINGS).start()
        try:
            messages_rate, presses_rate = await run(cluster, events, users, Path(directory) / "bot.sqlite3")
        finally:
            cluster.stop()
    print(f"messages handled: {messages_rate:.0f}/s")
    print(f"presses handled:  {presses_rate:.0f}/s (answered and acknowledged)")
    print(f"ratio presses/messages: {presses_rate / messages_rate:.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 400, int(sys.argv[2]) if len(sys.argv) > 2 else 8))
