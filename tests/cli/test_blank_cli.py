"""A blank line is not a message: `im send`, `im edit` and `im chat` refuse it before sending, in words."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input

from im_cli.errors import ExitCode
from im_schema.content import TextContent
from im_schema.ids import direct_conversation
from tests.cli.test_chat_tui import _app, _last, _type, _until
from tests.cli.test_cli import _login, _name
from tests.cli.test_rules import _one_error_line
from tests.support.cluster import TestCluster

BLANKS = [" ", "\t\n", "\u3000", "\u200b", "\ufeff", "\u00a0\u2060", "\u3164"]


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


def _history(im, profile: str, target: str) -> list[dict]:
    result = im("-P", profile, "history", target, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("text", BLANKS)
def test_a_blank_text_is_refused_before_anything_is_sent(im, text):
    # Not even logged in: the text is looked at first.
    _one_error_line(im("send", "bob", text), ExitCode.USAGE, "nothing to send: the text is blank")
    _one_error_line(im("send", "bob", input=text + "\n"), ExitCode.USAGE, "nothing to send: the text is blank")
    _one_error_line(im("edit", "bob", "1", text), ExitCode.USAGE, "the new text is blank")


def test_blank_sends_and_edits_store_nothing(sqlite_cluster, im, tmp_path):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    assert im("-P", "alice", "send", bob, "  first  ").exit_code == 0
    for text in BLANKS:
        _one_error_line(im("-P", "alice", "send", bob, text), ExitCode.USAGE, "the text is blank")
        _one_error_line(im("-P", "alice", "send", bob, "-", input=text), ExitCode.USAGE, "the text is blank")
        _one_error_line(im("-P", "alice", "edit", bob, "1", text), ExitCode.USAGE, "the new text is blank")
    [only] = _history(im, "alice", bob)
    assert only["content"] == {"kind": "text", "text": "  first  "} and only["edited_at"] is None
    # A file with a blank caption goes without one, as with an empty one.
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes")
    sent = im("-P", "alice", "send", bob, "\u3000", "--file", str(notes), "--json")
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["content"].get("caption") is None


async def test_chat_does_not_send_a_blank_line(sqlite_cluster):
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    assert alice.session and bob.session
    a, b = alice.session.user, bob.session.user
    conversation = direct_conversation(a.id, b.id)
    await alice.send_text(b.username, "first")
    app = _app(bob, sqlite_cluster.url)
    async with app.run_test(size=(100, 20)) as pilot:
        await _until(pilot, lambda: app.current == conversation and _last(app).endswith("first"))
        for text in ("\u200b", "\u3000\ufeff", "\u2800"):
            await _type(pilot, app, text)
            await _type(pilot, app, f"/reply 1 {text}")
            await _type(pilot, app, f"/edit 1 {text}")
        await _until(pilot, lambda: any("the text is blank" in note.message for note in app._notifications))
        await _type(pilot, app, "\u3000 after the blanks")
        await _until(pilot, lambda: "after the blanks" in _last(app))
        assert app.is_running and app.query_one("#input", Input).value == ""
    page = await alice.history(conversation)
    assert [m.content for m in page.messages] == [TextContent(text="first"), TextContent(text="after the blanks")]
    await alice.aclose()
    await bob.aclose()
