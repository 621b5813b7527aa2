"""`im groups privacy / invitations / accept / decline / withdraw` against a real cluster."""

from __future__ import annotations

import json

from tests.cli.test_people_cli import _account


def test_privacy_and_invitation_commands(sqlite_cluster, im):
    url = sqlite_cluster.url
    owner = _account(im, url, "owner")
    ann = _account(im, url, "ann")
    ben = _account(im, url, "ben")

    assert json.loads(im("-P", "ann", "groups", "privacy", "--json").stdout) == {"group_invites": "everyone"}
    for profile in ("ann", "ben"):
        result = im("-P", profile, "groups", "privacy", "nobody")
        assert result.exit_code == 0 and "waits for your answer" in result.stdout
    bad = im("-P", "ann", "groups", "privacy", "strangers")
    assert bad.exit_code != 0 and "everyone, friends or nobody" in bad.stderr

    created = im("-P", "owner", "groups", "create", "Book club", ann)
    assert created.exit_code == 0, created.output
    assert "with 1 member\n" in created.stdout and f"invited (they accept or decline): {ann}" in created.stdout
    [group] = json.loads(im("-P", "owner", "groups", "list", "--json").stdout)
    gid = str(group["id"])
    invited = im("-P", "owner", "groups", "invite", gid, ben)
    assert f"invited (they accept or decline): {ben}" in invited.stdout

    mine = json.loads(im("-P", "ann", "groups", "invitations", "--json").stdout)
    assert [(i["group_name"], i["inviter"]["username"]) for i in mine] == [("Book club", owner)]
    table = im("-P", "ann", "groups", "invitations").stdout
    assert "Book club" in table and "im groups accept ID" in table
    assert "joined 'Book club'" in im("-P", "ann", "groups", "accept", str(mine[0]["id"])).stdout

    [bens] = json.loads(im("-P", "owner", "groups", "invitations", gid, "--json").stdout)
    assert bens["invitee"]["username"] == ben
    assert "declined" in im("-P", "ben", "groups", "decline", str(bens["id"])).stdout
    assert "no pending invitations" in im("-P", "ben", "groups", "invitations").stdout

    assert im("-P", "ben", "groups", "privacy", "friends").exit_code == 0
    im("-P", "owner", "groups", "invite", gid, ben)  # declined recently: nothing happens
    assert "no pending invitations" in im("-P", "owner", "groups", "invitations", gid).stdout
    carl = _account(im, url, "carl")
    assert im("-P", "carl", "groups", "privacy", "nobody").exit_code == 0
    im("-P", "owner", "groups", "invite", gid, carl)
    [carls] = json.loads(im("-P", "owner", "groups", "invitations", gid, "--json").stdout)
    assert "withdrawn" in im("-P", "owner", "groups", "withdraw", gid, str(carls["id"])).stdout
    gone = im("-P", "carl", "groups", "accept", str(carls["id"]))
    assert gone.exit_code != 0 and "no such pending invitation" in gone.stderr
