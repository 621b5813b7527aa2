"""`im chat` with a bot: buttons under its messages are pressed (typed or clicked), and its declared
commands are listed and sent to it."""

from __future__ import annotations

from im_schema.ids import direct_conversation
from im_schema.presses import BotCommand
from tests.cli.test_chat_tui import _app, _shown, _type, _until


def _notes(app) -> list[str]:
    return [str(note.message) for note in app._notifications]


async def test_buttons_and_bot_commands_in_the_tui(sqlite_cluster):
    bot = await sqlite_cluster.user("bot")
    bob = await sqlite_cluster.user("bob")
    assert bot.session and bob.session
    conversation = direct_conversation(bot.session.user.id, bob.session.user.id)
    await bot.set_commands([BotCommand(name="weather", description="the weather", args="CITY")])
    question = await bot.send_text(bob.session.user.username, "Coffee?", buttons=[("yes", "Yes"), ("no", "No")])
    app = _app(bob, sqlite_cluster.url)
    async with app.run_test(size=(100, 16)) as pilot:
        await _until(pilot, lambda: app.current == conversation and _shown(app))
        assert "[1] Yes  [2] No" in _shown(app)[-1]

        await _type(pilot, app, f"/press {question.seq} 2")
        await _until(pilot, lambda: any('pressed "No"' in note for note in _notes(app)))
        await app.run_action(f"press_button({question.seq}, 'yes')")  # what a click on [1] Yes runs
        await _until(pilot, lambda: any('pressed "Yes"' in note for note in _notes(app)))
        assert [p.button for p in (await bot.pending_presses()).presses] == ["no", "yes"]
        await _type(pilot, app, f"/press {question.seq} 7")
        await _until(pilot, lambda: any("has no button 7" in note for note in _notes(app)))

        # The bot's commands: listed on "/" and in /help, and sent to the bot as text.
        await _until(pilot, lambda: app._peer_commands())
        app.query_one("#input").value = "/"
        await _until(pilot, lambda: any("/weather CITY - the weather" in note for note in _notes(app)))
        app.query_one("#input").value = ""
        await _type(pilot, app, "/help")
        await _until(pilot, lambda: any("This bot's commands" in note for note in _notes(app)))
        await _type(pilot, app, "/weather Lyon")
        await _until(pilot, lambda: any("/weather Lyon" in line for line in _shown(app)))
        sent = (await bot.history(conversation, after=question.seq)).messages
        assert [m.content.text for m in sent] == ["/weather Lyon"]
    await bot.aclose()
    await bob.aclose()
