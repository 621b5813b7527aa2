"""The pytest plugin bot authors get with the SDK: its fixture runs a real cluster with default settings."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from im_sdk.bot import Bot, Command, CommandArgs, FriendRequest, MessageEvent
from im_sdk.testing import LocalCluster


async def test_a_bot_under_test_talks_to_a_user_on_the_plugin_cluster(im_cluster: LocalCluster):
    username, password = await im_cluster.account("echo")
    bot = Bot(im_cluster.url, username=username, password=password)

    @bot.on_event(FriendRequest)
    async def befriend(event: FriendRequest) -> None:
        await event.accept()

    @bot.on_message(Command("add"))
    async def add(msg: MessageEvent, command: CommandArgs) -> None:
        await msg.reply(str(sum(int(arg) for arg in command.argv)))

    async with bot, im_cluster.chat(username) as chat:
        assert await chat.ask("/add 2 3") == "5"
        assert chat.conversation.startswith("d:")


def test_the_plugin_is_registered_and_imports_no_server_until_used():
    code = (
        "import sys, im_sdk.testing; "
        "assert not [m for m in sys.modules if m.startswith(('im_server', 'tests'))], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    plugins = {entry.name: entry.value for entry in entry_points(group="pytest11")}
    assert plugins.get("imkit") == "im_sdk.testing"
