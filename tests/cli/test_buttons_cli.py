"""Buttons and bot commands from the terminal: history shows them, `im press` presses one, `im bots
commands` lists what a bot declared."""

from __future__ import annotations

import json
import uuid

from im_schema.presses import BotCommand
from im_sdk import Client
from tests.support.cluster import PASSWORD


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_buttons_press_and_commands(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    alice, botname = _name("alice"), _name("bot")
    assert (
        im("--server", url, "-P", "alice", "register", alice, "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    )
    login = im(
        "--server", url, "-P", "alice", "login", alice, "--device", "term", "--password-stdin", input=PASSWORD + "\n"
    )
    assert login.exit_code == 0, login.output

    with Client(url) as bot:
        bot.register(botname, PASSWORD)
        bot.login(botname, PASSWORD)
        bot.set_commands([BotCommand(name="weather", description="the weather", args="CITY")])
        question = bot.send_text(alice, "Coffee?", buttons=[("yes", "Yes"), ("no", "No [really]")])

        shown = im("-P", "alice", "history", botname)
        assert "Coffee?" in shown.stdout and "[1] Yes  [2] No [really]" in shown.stdout
        as_json = json.loads(im("-P", "alice", "history", botname, "--json").stdout)
        assert as_json[-1]["content"]["buttons"] == [
            {"id": "yes", "label": "Yes"},
            {"id": "no", "label": "No [really]"},
        ]

        pressed = im("-P", "alice", "press", botname, str(question.seq), "2")
        assert pressed.exit_code == 0, pressed.output
        assert 'pressed "No [really]"' in pressed.stdout
        by_id = json.loads(im("-P", "alice", "press", botname, str(question.seq), "yes", "--json").stdout)
        assert by_id["button"] == "yes"
        assert [p.button for p in bot.pending_presses().presses] == ["no", "yes"]

        unknown = im("-P", "alice", "press", botname, str(question.seq), "3")
        assert unknown.exit_code == 1 and "has no button '3'" in unknown.stderr
        missing = im("-P", "alice", "press", botname, "999", "1")
        assert missing.exit_code == 1 and "no message" in missing.stderr

        listed = im("-P", "alice", "bots", "commands", botname)
        assert listed.exit_code == 0 and "/weather CITY - the weather" in listed.stdout
        assert json.loads(im("-P", "alice", "bots", "commands", botname, "--json").stdout)[0]["name"] == "weather"
        assert "declares no commands" in im("-P", "alice", "bots", "commands", alice).stdout

        # Buttons from the command line.
        asked = im("-P", "alice", "send", botname, "Ready?", "--button", "go=Go", "-b", "wait=Not yet", "--json")
        assert asked.exit_code == 0, asked.output
        assert [b["label"] for b in json.loads(asked.stdout)["content"]["buttons"]] == ["Go", "Not yet"]
        assert im("-P", "alice", "send", botname, "Ready?", "--button", "go").exit_code == 2
        too_long = im("-P", "alice", "send", botname, "Ready?", "--button", "go=" + "x" * 65)
        assert too_long.exit_code != 0 and "Traceback" not in too_long.output
