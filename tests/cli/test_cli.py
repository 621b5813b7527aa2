"""The terminal client against a real cluster."""

from __future__ import annotations

import json
import os
import stat
import uuid

import pytest

from tests.support.cli import listen
from tests.support.cluster import PASSWORD, TestCluster


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _login(im, url: str, profile: str, username: str) -> None:
    result = im("--server", url, "--profile", profile, "register", username, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    result = im(
        "--server", url, "-P", profile, "login", username, "--device", "term", "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert f"logged in as {username}" in result.output


def test_chat_from_two_profiles(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)

    profiles = config_dir / "profiles.json"
    assert stat.S_IMODE(os.stat(profiles).st_mode) == 0o600
    assert set(json.loads(profiles.read_text())) == {"alice", "bob"}

    whoami = json.loads(im("-P", "alice", "whoami", "--json").stdout)
    assert whoami["user"]["username"] == alice and whoami["device_id"] == "term"

    sent = im("-P", "alice", "send", bob, "hello bob", "--json")
    assert sent.exit_code == 0, sent.output
    message = json.loads(sent.stdout)
    assert message["seq"] == 1 and message["content"] == {"kind": "text", "text": "hello bob"}

    piped = im("-P", "bob", "send", alice, input="line one\nline two\n")
    assert piped.exit_code == 0 and "#2" in piped.stdout

    table = im("-P", "bob", "conversations")
    assert message["conversation"] in table.stdout and alice in table.stdout
    summaries = json.loads(im("-P", "alice", "conversations", "--json").stdout)
    assert [(s["id"], s["max_seq"], s["unread"]) for s in summaries] == [(message["conversation"], 2, 1)]

    history = json.loads(im("-P", "bob", "history", alice, "--json").stdout)
    assert [m["content"]["text"] for m in history] == ["hello bob", "line one\nline two"]
    shown = im("-P", "bob", "history", message["conversation"], "--limit", "1")
    assert "line one" in shown.stdout and "hello bob" not in shown.stdout


def test_logout_forgets_the_tokens(sqlite_cluster, im, config_dir):
    _login(im, sqlite_cluster.url, "default", _name("carol"))
    saved = json.loads((config_dir / "profiles.json").read_text())["default"]
    assert im("logout").exit_code == 0
    after = json.loads((config_dir / "profiles.json").read_text())["default"]
    assert after["access_token"] is None and after["refresh_token"] is None
    result = im("whoami")
    assert result.exit_code == 4 and "not logged in" in result.stderr
    # The refresh token of the ended session no longer works on the server either.
    import httpx

    refused = httpx.post(f"{sqlite_cluster.url}/v1/auth/refresh", json={"refresh_token": saved["refresh_token"]})
    assert refused.status_code == 401


def test_errors_are_clear_and_have_exit_codes(sqlite_cluster, im):
    username = _name("dave")
    _login(im, sqlite_cluster.url, "default", username)
    wrong = im("login", username, "--password-stdin", input="not the password\n")
    assert wrong.exit_code == 4 and "wrong username or password" in wrong.stderr
    _login(im, sqlite_cluster.url, "second", _name("erin"))
    missing = im("-P", "second", "send", "no_such_user_x", "hi")
    assert missing.exit_code == 1 and "user_not_found" in missing.stderr
    unreachable = im(
        "--server",
        "http://127.0.0.1:9",
        "-P",
        "fresh",
        "register",
        "someone",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert unreachable.exit_code == 3 and "cannot reach" in unreachable.stderr
    assert "ConnectError" not in unreachable.stderr  # the operating system's words, not an exception's repr
    taken = im("-P", "second", "register", username, "--password-stdin", input=PASSWORD + "\n")
    assert taken.exit_code == 1 and "username_taken" in taken.stderr


def test_listen_json_prints_one_message_per_line(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    im("-P", "alice", "send", bob, "waiting for you")

    env = {**os.environ, "IM_CONFIG_DIR": str(config_dir), "IM_PROFILE": "bob"}
    listener, wait = listen(env)
    try:
        im("-P", "alice", "send", bob, "live one")
        lines = wait(2)
    finally:
        listener.terminate()
        listener.wait(10)
    assert [(m["seq"], m["content"]["text"]) for m in lines] == [(1, "waiting for you"), (2, "live one")]


def test_markup_in_messages_is_shown_verbatim(sqlite_cluster, im):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    hostile = "[red]not red[/red] [/] [link=http://x]y[/link]"
    assert im("-P", "alice", "send", bob, hostile).exit_code == 0
    shown = im("-P", "bob", "history", alice)
    assert shown.exit_code == 0
    assert hostile in shown.stdout
    assert im("-P", "bob", "conversations").exit_code == 0


def test_terminal_escapes_from_others_never_reach_the_terminal(sqlite_cluster, im):
    # A message (or a group's name) carrying escape sequences could retitle the window, clear the
    # screen or move the cursor over earlier lines: every control character is shown as a symbol.
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    hostile = "a\x1b]0;pwned\x07b \x1b[2J\x1b[31mred\x1b[0m \x9b2J c\rd"
    assert im("-P", "alice", "send", bob, hostile).exit_code == 0
    assert im("-P", "alice", "groups", "create", "club\x1b[5m", bob).exit_code == 0
    assert im("-P", "alice", "send", "club\x1b[5m", "hi").exit_code == 0
    for args in (("history", alice), ("conversations",), ("groups", "list"), ("history", "club\x1b[5m")):
        shown = im("-P", "bob", *args)
        assert shown.exit_code == 0, shown.output
        assert not any(character in shown.stdout for character in "\x1b\x07\x9b\r"), (args, shown.stdout)
    shown = im("-P", "bob", "history", alice).stdout
    assert "a␛]0;pwned␇b ␛[2J␛[31mred␛[0m \ufffd2J cd" in shown
    # --json keeps the text exactly, escaped as JSON.
    assert im("-P", "bob", "history", alice, "--json").stdout.count("\\u001b") == 4


def test_read_recall_edit_reply_and_mention(sqlite_cluster, im):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    first = json.loads(im("-P", "alice", "send", bob, "first", "--json").stdout)
    second = json.loads(im("-P", "alice", "send", bob, "second", "--json").stdout)
    conversation = first["conversation"]
    table = im("-P", "bob", "conversations").stdout
    assert conversation in table

    state = json.loads(im("-P", "bob", "read", alice, str(first["seq"]), "--json").stdout)
    assert (state["read_seq"], state["unread"]) == (first["seq"], 1)
    assert "0 unread" in im("-P", "bob", "read", conversation).stdout

    reply = im("-P", "bob", "send", alice, "got it", "--reply", str(second["seq"]), "--mention", alice, "--json")
    assert reply.exit_code == 0, reply.output
    answer = json.loads(reply.stdout)
    assert answer["reply_to"]["preview"] == "second"
    assert answer["mentions"] == [first["sender"]]
    assert "@" in im("-P", "alice", "conversations").stdout  # an unread mention is flagged

    assert im("-P", "alice", "edit", bob, str(second["seq"]), "second, fixed").exit_code == 0
    assert im("-P", "alice", "recall", bob, str(first["seq"])).exit_code == 0
    history = json.loads(im("-P", "bob", "history", alice, "--json").stdout)
    by_seq = {m["seq"]: m for m in history}
    assert by_seq[first["seq"]]["content"]["kind"] == "recalled"
    assert by_seq[second["seq"]]["content"]["text"] == "second, fixed"
    shown = im("-P", "bob", "history", alice).stdout
    assert "recalled" in shown
    refused = im("-P", "bob", "recall", alice, str(second["seq"]))
    assert refused.exit_code == 1
    assert "your own" in refused.stderr
