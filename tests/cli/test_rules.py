"""The CLI's rules: one-line errors with documented exit codes, group and user arguments in every form,
downloads that never overwrite, profiles, normalised server URLs, and text output in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from im_cli.errors import ExitCode
from im_schema.models import Message
from im_sdk._files import DownloadPlan
from tests.cli.test_cli import _login, _name
from tests.support import media
from tests.support.cluster import PASSWORD, TestCluster


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


def _one_error_line(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


# Bad inputs that need no server: they are refused before anything is sent.
OFFLINE = [
    (["register", "ab", "--password-stdin"], "long-enough-pw\n", ExitCode.USAGE, "the username may only be"),
    (["register", "someone", "--password-stdin"], "secret\n", ExitCode.USAGE, "the password needs at least 8"),
    (["login", "Bad Name!", "--password-stdin"], "x\n", ExitCode.USAGE, "the username may only be"),
    (["login", "someone", "-d", "bad device!", "--password-stdin"], "x\n", ExitCode.USAGE, "the device name"),
    (["register", "someone", "--password-stdin"], "\n", ExitCode.USAGE, "no password on stdin"),
    (["history"], None, ExitCode.USAGE, "Missing argument 'TO'"),
    (["history", "bob", "-n", "0"], None, ExitCode.USAGE, "--limit"),
    (["--bogus"], None, ExitCode.USAGE, "No such option"),
    (["nosuchcommand"], None, ExitCode.USAGE, "No such command"),
    (["whoami"], None, ExitCode.AUTHENTICATION, "not logged in"),
    (["send", "bob", "hi"], None, ExitCode.AUTHENTICATION, "not logged in"),
    (["chat"], None, ExitCode.AUTHENTICATION, "not logged in"),
    (["groups", "info", "g:1"], None, ExitCode.AUTHENTICATION, "not logged in"),
    (["profile", "use", "nobody"], None, ExitCode.USAGE, "no profile 'nobody'"),
    (["profile", "remove", "nobody"], None, ExitCode.USAGE, "no profile 'nobody'"),
    (["--server", "ftp://x", "whoami"], None, ExitCode.USAGE, "not an http:// or https:// URL"),
    (
        ["--server", "http://127.0.0.1:9", "-P", "x", "register", "someone", "--password-stdin"],
        PASSWORD + "\n",
        ExitCode.UNREACHABLE,
        "cannot reach http://127.0.0.1:9",
    ),
]


@pytest.mark.parametrize(("args", "stdin", "code", "fragment"), OFFLINE)
def test_bad_input_is_one_line_with_its_exit_code(im, args, stdin, code, fragment):
    _one_error_line(im(*args, input=stdin), code, fragment)


def test_bad_input_of_a_logged_in_user_is_one_line(sqlite_cluster, im):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    cases = [
        (["send", bob, ""], ExitCode.USAGE, "nothing to send"),
        (["send", bob, "hi", "--kind", "image"], ExitCode.USAGE, "--kind goes with --file"),
        (["send", "x" * 40, "hi"], ExitCode.USAGE, "the user may only be"),
        (["send", "no_such_user_x", "hi"], ExitCode.REFUSED, "user_not_found"),
        (["send", bob, "x" * 20_000], ExitCode.USAGE, "the text is too long"),
        (["listen", "--start", "nowhere"], ExitCode.USAGE, "--start is one of"),
        (["friends", "add", "UPPER bad!"], ExitCode.USAGE, "the recipient may only be a user id, or a username"),
        (["friends", "accept", "nobody_here"], ExitCode.REFUSED, "no pending friend request from nobody_here"),
        (["groups", "create", ""], ExitCode.USAGE, "the name is empty"),
        (["groups", "info", "no such group"], ExitCode.REFUSED, "none of your groups is called 'no such group'"),
        (["groups", "info", "g:999999"], ExitCode.REFUSED, "group_not_found"),
        (["groups", "mute", "g:1"], ExitCode.USAGE, "name one USER, or use --all"),
        (["groups", "create", "x", "--join", "sometimes"], ExitCode.USAGE, "--join is one of"),
        (["download", bob, "99"], ExitCode.REFUSED, "conversation_not_found"),
        # Not on a terminal (a script, a pipe), the full-screen client would hang waiting for keys.
        (["chat"], ExitCode.USAGE, "im chat needs a terminal"),
        (["--server", url + "/", "whoami"], ExitCode.OK, ""),
    ]
    for args, code, fragment in cases:
        result = im("-P", "alice", *args)
        if code == ExitCode.OK:
            assert result.exit_code == 0, (args, result.output)
        else:
            _one_error_line(result, code, fragment)
    wrong = im("-P", "alice", "login", alice, "--password-stdin", input="not the password\n")
    _one_error_line(wrong, ExitCode.AUTHENTICATION, "wrong username or password")


def test_a_group_is_named_by_g_n_n_or_its_name(sqlite_cluster, im):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    created = im("-P", "alice", "groups", "create", "book club", bob, "--json")
    assert created.exit_code == 0, created.output
    group = json.loads(created.stdout)
    gid = group["id"]
    shown = im("-P", "alice", "groups", "create", "[red]x", "--join", "open")
    assert shown.exit_code == 0 and "with 1 member" in shown.stdout and "1 members" not in shown.stdout
    for form in (f"g:{gid}", str(gid), "book club", "Book Club"):
        info = im("-P", "bob", "groups", "info", form)
        assert info.exit_code == 0, (form, info.output)
        assert "book club" in info.stdout and "2 members" in info.stdout and f"owner {alice}" in info.stdout
    assert im("-P", "bob", "send", "book club", "hi all").exit_code == 0
    listing = im("-P", "bob", "history", f"g:{gid}")
    assert "hi all" in listing.stdout and bob in listing.stdout
    members = im("-P", "alice", "groups", "members", "book club", "--json")
    assert {m["user"]["username"] for m in json.loads(members.stdout)} == {alice, bob}
    assert "[red]x" in im("-P", "alice", "groups", "list").stdout  # names are shown verbatim


def test_replies_mentions_and_names_in_text_output(sqlite_cluster, im):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    first = json.loads(im("-P", "alice", "send", bob, "is the [b]report[/b] done?", "--json").stdout)
    answer = im("-P", "bob", "send", alice, "yes", "--reply", str(first["seq"]), "--mention", alice)
    assert answer.exit_code == 0, answer.output
    shown = im("-P", "alice", "history", bob).stdout
    assert f'↪ {alice} #1: "is the [b]report[/b] done?"' in shown
    assert f"yes @{alice}" in shown
    table = im("-P", "alice", "conversations").stdout
    assert bob in table and "@" in table


def test_downloads_never_overwrite_and_a_trailing_slash_is_a_directory(sqlite_cluster, im, tmp_path, monkeypatch):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    picture = tmp_path / "cat.png"
    picture.write_bytes(media.png(40, 30))
    sent = json.loads(im("-P", "alice", "send", bob, "-f", str(picture), "--json").stdout)
    conversation = sent["conversation"]
    history = im("-P", "bob", "history", alice).stdout
    assert "[image] cat.png" in history and "\\[" not in history  # not escaped twice

    target = tmp_path / "new" / "dir"
    first = im("-P", "bob", "download", conversation, "1", f"{target}/", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["path"] == str(target / "cat.png")
    second = im("-P", "bob", "download", conversation, "1", str(target), "--json")
    assert json.loads(second.stdout)["path"] == str(target / "cat (1).png")
    (target / "cat.png").write_bytes(b"mine")
    forced = im("-P", "bob", "download", conversation, "1", str(target / "cat.png"), "--force")
    assert forced.exit_code == 0, forced.output
    assert (target / "cat.png").read_bytes() == picture.read_bytes()
    assert sorted(p.name for p in target.iterdir()) == ["cat (1).png", "cat.png"]
    monkeypatch.chdir(target)
    here = im("-P", "bob", "download", conversation, "1", "--json")
    assert json.loads(here.stdout)["path"].endswith("cat (2).png")


def _file_message(name: str = "cat.png") -> Message:
    data = b"x" * 10
    import hashlib

    return Message.model_validate(
        {
            "conversation": "d:1:2",
            "seq": 1,
            "sender": 1,
            "sent_at": "2026-01-01T00:00:00Z",
            "content": {
                "kind": "file",
                "blob": hashlib.sha256(data).hexdigest(),
                "name": name,
                "size": len(data),
                "media_type": "application/octet-stream",
            },
        }
    )


def test_sdk_download_paths(tmp_path: Path):
    message = _file_message()
    into = DownloadPlan.for_message(message, f"{tmp_path}/a/b/", thumbnail=False)
    assert into.target == tmp_path / "a" / "b" / "cat.png" and (tmp_path / "a" / "b").is_dir()
    (tmp_path / "a" / "b" / "cat.png").write_bytes(b"old")
    assert DownloadPlan.for_message(message, tmp_path / "a" / "b", thumbnail=False).target.name == "cat (1).png"
    assert DownloadPlan.for_message(message, tmp_path / "a" / "b" / "cat.png", thumbnail=False).target.name == (
        "cat (1).png"
    )
    kept = DownloadPlan.for_message(message, tmp_path / "a" / "b" / "cat.png", thumbnail=False, overwrite=True)
    assert kept.target.name == "cat.png"


def test_profiles_list_use_remove_and_normalised_urls(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    alice = _name("alice")
    _login(im, url + "/", "work", alice)
    saved = json.loads((config_dir / "profiles.json").read_text())["work"]
    assert saved["server"] == url  # the trailing slash is dropped
    listed = json.loads(im("profile", "list", "--json").stdout)
    assert [(p["name"], p["logged_in"], p["default"]) for p in listed] == [("work", True, False)]
    assert im("--server", url + "//", "-P", "work", "whoami").exit_code == 0
    assert im("whoami").exit_code == ExitCode.AUTHENTICATION  # 'default' is not logged in
    used = im("profile", "use", "work")
    assert used.exit_code == 0 and "work" in used.stdout
    assert alice in im("whoami").stdout
    assert "*" in im("profile").stdout
    assert im("profile", "remove", "work").exit_code == 0
    assert im("profile", "list", "--json").stdout.strip() == "[]"
    assert im("whoami").exit_code == ExitCode.AUTHENTICATION
