"""`im friends ...` and `im groups ...` against a real cluster."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.cluster import PASSWORD, TestCluster


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _account(im, url: str, profile: str) -> str:
    username = _name(profile)
    assert (
        im("--server", url, "-P", profile, "register", username, "--password-stdin", input=PASSWORD + "\n").exit_code
        == 0
    )
    result = im("--server", url, "-P", profile, "login", username, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    return username


def test_friends_commands(sqlite_cluster, im):
    url = sqlite_cluster.url
    alice = _account(im, url, "alice")
    bob = _account(im, url, "bob")

    sent = im("-P", "alice", "friends", "add", bob, "-m", "hello there", "--json")
    assert sent.exit_code == 0, sent.output
    request = json.loads(sent.stdout)
    assert request["status"] == "pending"
    incoming = json.loads(im("-P", "bob", "friends", "requests", "--json").stdout)
    assert [(r["id"], r["message"]) for r in incoming] == [(request["id"], "hello there")]
    assert bob in im("-P", "alice", "friends", "requests", "--outgoing").stdout
    assert "friends now" in im("-P", "bob", "friends", "accept", str(request["id"])).stdout

    assert im("-P", "alice", "friends", "remark", bob, "Bobby").exit_code == 0
    [friend] = json.loads(im("-P", "alice", "friends", "list", "--json").stdout)
    assert (friend["user"]["username"], friend["remark"]) == (bob, "Bobby")
    table = im("-P", "alice", "friends", "list").stdout
    assert bob in table and "Bobby" in table
    assert "Bobby" in im("-P", "alice", "friends", "info", bob).stdout

    assert im("-P", "alice", "friends", "block", bob).exit_code == 0
    assert json.loads(im("-P", "alice", "friends", "blocked", "--json").stdout)[0]["username"] == bob
    assert im("-P", "alice", "friends", "unblock", bob).exit_code == 0
    assert im("-P", "bob", "friends", "remove", alice).exit_code == 0
    assert json.loads(im("-P", "alice", "friends", "list", "--json").stdout) == []
    missing = im("-P", "alice", "friends", "info", bob)
    assert missing.exit_code == 1 and "not your friend" in missing.stderr

    declined = json.loads(im("-P", "alice", "friends", "add", bob, "--json").stdout)
    assert im("-P", "bob", "friends", "decline", str(declined["id"])).exit_code == 0


def test_groups_commands(sqlite_cluster, im):
    url = sqlite_cluster.url
    owner = _account(im, url, "owner")
    ann = _account(im, url, "ann")
    ben = _account(im, url, "ben")

    created = im("-P", "owner", "groups", "create", "Book club", ann, "--join", "approval", "--json")
    assert created.exit_code == 0, created.output
    group = json.loads(created.stdout)
    gid = str(group["id"])
    assert group["member_count"] == 2

    assert "asked to join" in im("-P", "ben", "groups", "join", gid, "-m", "me too").stdout
    [request] = json.loads(im("-P", "owner", "groups", "requests", gid, "--json").stdout)
    assert request["message"] == "me too"
    assert im("-P", "owner", "groups", "approve", gid, str(request["id"])).exit_code == 0
    members = json.loads(im("-P", "ann", "groups", "members", gid, "--json").stdout)
    assert sorted(m["user"]["username"] for m in members) == sorted([owner, ann, ben])

    assert im("-P", "owner", "groups", "admin", gid, ann).exit_code == 0
    assert im("-P", "ann", "groups", "notice", gid, "Chapter 3 on Friday").exit_code == 0
    assert "Chapter 3 on Friday" in im("-P", "ben", "groups", "info", gid).stdout
    assert im("-P", "ben", "groups", "nickname", gid, "Benny").exit_code == 0
    assert im("-P", "ben", "groups", "remark", gid, "books").exit_code == 0
    assert json.loads(im("-P", "ben", "groups", "info", gid, "--json").stdout)["my_remark"] == "books"

    assert im("-P", "ben", "send", f"g:{gid}", "hi all").exit_code == 0
    assert im("-P", "ann", "groups", "mute", gid, ben, "--for", "10m").exit_code == 0
    muted = im("-P", "ben", "send", f"g:{gid}", "can you hear me")
    assert muted.exit_code == 1 and "muted" in muted.stderr
    assert im("-P", "ann", "groups", "mute", gid, ben, "--off").exit_code == 0
    assert im("-P", "owner", "groups", "mute", gid, "--all").exit_code == 0
    assert im("-P", "ben", "send", f"g:{gid}", "still?").exit_code == 1
    assert im("-P", "owner", "groups", "mute", gid, "--all", "--off").exit_code == 0

    kicked = im("-P", "ann", "groups", "kick", gid, owner)
    assert kicked.exit_code == 1 and "forbidden" in kicked.stderr
    assert im("-P", "ann", "groups", "kick", gid, ben).exit_code == 0
    history = im("-P", "owner", "history", f"g:{gid}", "-n", "100").stdout
    assert "hi all" in history
    assert f"removed {ben}" in history

    assert im("-P", "owner", "groups", "invite", gid, ben).exit_code == 0
    assert im("-P", "owner", "groups", "transfer", gid, ann).exit_code == 0
    assert im("-P", "owner", "groups", "leave", gid).exit_code == 0
    listed = json.loads(im("-P", "owner", "groups", "list", "--json").stdout)
    assert listed == []
    assert im("-P", "ann", "groups", "dissolve", gid, "--yes").exit_code == 0
    refused = im("-P", "ben", "send", f"g:{gid}", "hello?")
    assert refused.exit_code == 1 and "group_dissolved" in refused.stderr
