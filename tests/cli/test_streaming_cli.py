"""Streaming messages in the CLI: `im listen` prints a growing message once when final (or grows it in place
on a terminal), `im history` marks one still being written or cut short."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

from rich.console import Console

from im_cli.streaming import StreamPrinter
from im_schema.content import TextContent
from im_schema.models import Message
from im_sdk import Client, StreamEvent
from tests.cli.test_cli import _login, _name
from tests.support.cluster import PASSWORD


def _message(text: str, seq: int = 1, stream: str | None = "open") -> Message:
    return Message(
        conversation="d:1:2",
        seq=seq,
        sender=1,
        sent_at="2026-12-01T10:00:00.000Z",
        content=TextContent(text=text),
        stream=stream,
    )


def _printer(live: bool) -> tuple[StreamPrinter, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, highlight=False, soft_wrap=True, color_system=None, width=200)
    return StreamPrinter(console, lambda m: f"bot: {m.content.text}", live=live), buffer


def _event(text: str, state: str = "open", seq: int = 1) -> StreamEvent:
    return StreamEvent("d:1:2", seq, 1, text, state)


def _no_fetch(conversation: str, seq: int) -> Message | None:
    raise AssertionError("nothing to fetch")


def test_off_a_terminal_a_stream_is_printed_once_when_final():
    printer, buffer = _printer(live=False)
    assert printer.message(_message("He"))
    printer.event(_event("Hello"), _no_fetch)
    assert buffer.getvalue() == ""
    printer.event(_event("Hello, world", "finished"), _no_fetch)
    assert buffer.getvalue() == "bot: Hello, world\n"
    assert not printer.message(_message("plain", seq=2, stream=None))  # not a stream: the caller prints it
    fetched = []

    def fetch(conversation: str, seq: int) -> Message | None:
        fetched.append(seq)
        return _message("opened before I listened", seq=seq)

    printer.event(_event("opened before I listened, now done", "abandoned", seq=3), fetch)
    assert fetched == [3]
    assert buffer.getvalue().splitlines()[-1] == "bot: opened before I listened, now done"


def test_on_a_terminal_a_stream_grows_in_place():
    printer, buffer = _printer(live=True)
    printer.message(_message("He"))
    printer.event(_event("Hello"), _no_fetch)
    printer.event(_event("Hello, wor"), _no_fetch)
    assert buffer.getvalue() == "bot: Hello, wor"
    printer.event(_event("Hello, world", "finished"), _no_fetch)
    assert buffer.getvalue() == "bot: Hello, world\n"

    printer.message(_message("Tw", seq=2))
    printer.interrupt()  # something else is printed meanwhile
    buffer.write("other line\n")
    printer.event(_event("Two parts", seq=2), _no_fetch)  # held: the line was ended
    printer.event(_event("Two parts, cut", "abandoned", seq=2), _no_fetch)
    assert buffer.getvalue().splitlines()[-3:] == ["bot: Tw", "other line", "bot: Two parts, cut"]

    printer.message(_message("draft", seq=3))
    printer.event(_event("rewritten", "finished", seq=3), _no_fetch)  # not a growth: printed again, whole
    assert buffer.getvalue().splitlines()[-2:] == ["bot: draft", "bot: rewritten"]


def test_history_marks_streams_and_listen_prints_the_final_text_once(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    bob, bot_name = _name("bob"), _name("bot")
    _login(im, url, "bob", bob)
    with Client(url) as bot:
        bot.register(bot_name, PASSWORD)
        bot.login(bot_name, PASSWORD)
        listener = subprocess.Popen(
            [sys.executable, "-c", "from im_cli.main import main; main()", "listen"],
            env={**os.environ, "IM_CONFIG_DIR": str(config_dir), "IM_PROFILE": "bob", "COLUMNS": "300"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        errors: list[str] = []
        changed = threading.Condition()

        def read(stream, into) -> None:
            for line in stream:
                with changed:
                    into.append(line.rstrip("\n"))
                    changed.notify_all()

        threading.Thread(target=read, args=(listener.stdout, lines), daemon=True).start()
        threading.Thread(target=read, args=(listener.stderr, errors), daemon=True).start()

        def wait(predicate) -> None:
            with changed:
                assert changed.wait_for(predicate, 30), (lines, errors)

        try:
            wait(lambda: any("connected to" in line for line in errors))
            opened = bot.open_stream(bob, "The answer")
            bot.append_stream(opened.conversation, opened.seq, 10, " is")
            result = im("-P", "bob", "history", bot_name)
            assert result.exit_code == 0 and "The answer is …" in result.output
            bot.finish_stream(opened.conversation, opened.seq, offset=13, text=" 42.")
            cut = bot.open_stream(bob, "Half")
            bot.finish_stream(cut.conversation, cut.seq, abandon=True)
            bot.send_text(bob, "after the streams")
            wait(lambda: any("after the streams" in line for line in lines))
            said = [line for line in lines if "The answer" in line or "Half" in line]
            assert len(said) == 2, lines
            assert said[0].endswith(f"{bot_name}: The answer is 42.")
            assert said[1].endswith(f"{bot_name}: Half (cut short)")
        finally:
            listener.terminate()
            listener.wait(10)
    result = im("-P", "bob", "history", bot_name)
    assert "The answer is 42." in result.output and "Half (cut short)" in result.output
    assert "…" not in result.output


def test_listen_json_has_a_line_per_stream_update():
    from im_cli.commands.chat import _event_json

    line = _event_json(_event("Hello", "open", seq=4))
    assert line == {"stream": {"conversation": "d:1:2", "seq": 4, "sender": 1, "text": "Hello", "state": "open"}}


def test_after_a_reconnect_held_streams_that_ended_are_printed():
    printer, buffer = _printer(live=False)
    printer.message(_message("one", seq=1))
    printer.message(_message("two", seq=2))
    stored = {1: _message("one, ended", seq=1, stream="finished"), 2: _message("two, still", seq=2)}
    printer.heal(lambda conversation, seq: stored[seq])
    assert buffer.getvalue() == "bot: one, ended\n"
    printer.event(_event("two, done", "finished", seq=2), _no_fetch)  # still held: printed at its end
    assert buffer.getvalue().splitlines() == ["bot: one, ended", "bot: two, done"]
