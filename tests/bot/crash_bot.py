"""A bot for the crash test: its handler records that it started, replies once, waits for a file the
test creates, replies again and records that it finished (run as a process and killed with SIGKILL).
For a message ``stream`` the reply is one streaming message, written in two parts around the wait."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from im_sdk import Backoff
from im_sdk.bot import Bot, MessageEvent


def record(path: Path, line: str) -> None:
    with path.open("a") as file:
        file.write(line + "\n")
        file.flush()


async def main(control: Path) -> None:
    bot = Bot.from_env(backoff=Backoff(initial=0.05, factor=2, max_delay=0.5))

    @bot.on_message()
    async def handle(msg: MessageEvent) -> None:
        record(control / "started", f"{msg.text}")
        if msg.text == "stream":
            async with msg.stream_reply(interval=0) as stream:
                await stream.append("part one")
                while not (control / "go-stream").exists():
                    await asyncio.sleep(0.02)
                await stream.append(", part two")
            record(control / "finished", "stream")
            return
        await msg.reply(f"first reply to {msg.text}")
        while not (control / f"go-{msg.text}").exists():
            await asyncio.sleep(0.02)
        await msg.reply(f"second reply to {msg.text}")
        record(control / "finished", f"{msg.text}")

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await bot.start()
    await bot.wait_connected()
    print("ready", flush=True)
    await stop.wait()
    await bot.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
