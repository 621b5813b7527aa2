"""`im server create-admin`, `im admin users|bots ...` and `im cluster ...` against a real cluster:
admins succeed, anyone else is refused (403), and every command speaks --json."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from im_sdk import Client
from tests.support.cluster import PASSWORD


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _account(im, url: str, username: str) -> None:
    result = im("--server", url, "-P", username, "register", username, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    result = im("--server", url, "-P", username, "login", username, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def test_create_admin_then_admin_commands(sqlite_cluster, im):
    url = sqlite_cluster.url
    root, bob = _name("root"), _name("bob")
    _account(im, url, root)
    _account(im, url, bob)
    data_dir = _sqlite_path(sqlite_cluster.settings.db_url).parent
    assert (data_dir / "im.db").exists()
    made = _json(im("server", "create-admin", root, "--data-dir", str(data_dir), "--json", input=""))
    assert made["user"]["is_admin"] and made["created"] is False

    # Refused to anyone but an admin: exit code and a one-line reason, no traceback.
    for args in (
        ("admin", "users", "list"),
        ("admin", "bots", "list"),
        ("cluster", "nodes"),
        ("cluster", "stats"),
        ("cluster", "routes", root),
        ("cluster", "drain", "gw-any"),
        ("cluster", "kick", root),
        ("cluster", "trace", f"d:{root}:{bob}", "1"),
        ("admin", "users", "make-admin", bob),
    ):
        refused = im("-P", bob, *args, "--json")
        assert refused.exit_code != 0, args
        assert "Traceback" not in refused.output

    users = _json(im("-P", root, "admin", "users", "list", "--json"))
    assert {root, bob} <= {user["username"] for user in users["users"]}
    assert _json(im("-P", root, "admin", "users", "show", bob, "--json"))["is_admin"] is False
    assert _json(im("-P", root, "admin", "users", "disable", bob, "--json"))["disabled_at"]
    assert _json(im("-P", root, "admin", "users", "enable", bob, "--json"))["disabled_at"] is None
    said = im("-P", root, "admin", "users", "disable", bob).stdout
    assert said.startswith(f"disabled {bob} (id ") and said.count("disabled") == 2  # the verb, then the flag
    assert im("-P", root, "admin", "users", "enable", bob).stdout.startswith(f"enabled {bob} (id ")
    assert _json(im("-P", root, "admin", "users", "make-admin", bob, "--json"))["is_admin"] is True
    assert "made admin" in im("-P", root, "admin", "users", "make-admin", bob).stdout

    bot = _name("bot")
    created = _json(im("-P", root, "admin", "bots", "create", bot, "--json"))
    with Client(url) as client:
        assert client.login_bot(created["token"]).user.is_bot
    assert [item["username"] for item in _json(im("-P", root, "admin", "bots", "list", "--json"))["bots"]] == [bot]
    assert _json(im("-P", root, "admin", "bots", "revoke", bot, "--json"))["devices"] == ["bot"]

    nodes = _json(im("-P", root, "cluster", "nodes", "--json"))["nodes"]
    assert sorted(node["role"] for node in nodes) == ["api", "gateway", "gateway"]
    assert "gateway" in im("-P", root, "cluster", "nodes").stdout
    stats = _json(im("-P", root, "cluster", "stats", "--json"))
    assert stats["gateway_nodes"] == 2
    assert _json(im("-P", root, "cluster", "routes", bob, "--json"))["routes"] == []
    top = im("-P", root, "cluster", "top", "--json", "--count", "1")
    assert json.loads(top.stdout.splitlines()[0])["nodes"]
    # Not on a terminal, each refresh is printed whole, one after the other (no redrawing in place).
    tables = im("-P", root, "cluster", "top", "--count", "2", "--interval", "0.2")
    assert tables.exit_code == 0 and tables.stdout.count("uptime") == 2 and tables.stdout.endswith("\n")
    gateway = next(node["node_id"] for node in nodes if node["role"] == "gateway")
    assert _json(im("-P", root, "cluster", "drain", gateway, "--json"))["state"] == "draining"
    # bob's sessions ended when he was disabled: log in again, then be kicked.
    result = im("-P", bob, "login", bob, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert im("-P", bob, "whoami").exit_code == 0
    kicked = _json(im("-P", root, "cluster", "kick", bob, "--json"))
    assert kicked["devices"]
    assert im("-P", bob, "whoami").exit_code != 0


def test_create_admin_needs_a_database(im, tmp_path):
    result = im("server", "create-admin", "someone", "--data-dir", str(tmp_path / "none"), input="")
    assert result.exit_code != 0
    assert "no database" in result.output


def test_cluster_trace_and_frame_rates(sqlite_cluster, im):
    url = sqlite_cluster.url
    root, bob = _name("root"), _name("bob")
    _account(im, url, root)
    _account(im, url, bob)
    data_dir = _sqlite_path(sqlite_cluster.settings.db_url).parent
    assert im("server", "create-admin", root, "--data-dir", str(data_dir), input="").exit_code == 0
    sent = im("-P", bob, "send", root, "trace this", "--json")
    seq = _json(sent)["seq"]
    ids = sorted(_json(im("-P", root, "admin", "users", "show", name, "--json"))["id"] for name in (root, bob))
    # The same message named every way the command accepts: by id, by names (any order), by the peer.
    for conversation in (f"d:{ids[0]}:{ids[1]}", f"d:{root}:{bob}", f"d:{bob}:{root}", f"d:{ids[1]}:{root}", bob):
        trace = _json(im("-P", root, "cluster", "trace", conversation, str(seq), "--json"))
        assert trace["seq"] == seq and trace["stored_by"] == sqlite_cluster.api.node.node_id, conversation
    text = im("-P", root, "cluster", "trace", bob, str(seq)).stdout
    assert "stored" in text and "not read by 1" in text
    for bad, code in ((("d:1:1", "1"), 2), ((bob, "0"), 2), ((bob, str(2**64)), 2), ((bob, str(seq + 1000)), None)):
        refused = im("-P", root, "cluster", "trace", *bad)
        assert refused.exit_code != 0 and "Traceback" not in refused.output, bad
        if code is not None:
            assert refused.exit_code == code, (bad, refused.output)
    table = im("-P", root, "cluster", "nodes").stdout
    assert "in/s" in table and "out/s" in table


def test_top_puts_the_busiest_nodes_first():
    from rich.console import Console

    from im_cli.commands.cluster import _nodes_table
    from im_schema.admin import ClusterNode, ClusterNodes

    def node(name: str, connections: int, rate: float | None) -> ClusterNode:
        return ClusterNode(
            node_id=name,
            role="gateway" if rate is not None else "api",
            address="",
            connections=connections,
            uptime=1,
            version="1",
            state="serving",
            live=True,
            frames_in_per_s=rate,
            frames_out_per_s=rate,
        )

    nodes = ClusterNodes(nodes=[node("api-1", 0, None), node("gw-1", 50, 1.0), node("gw-2", 5, 900.0)])
    console = Console(width=200, record=True)
    console.print(_nodes_table(nodes, by_load=True))
    text = console.export_text()
    assert text.index("gw-2") < text.index("gw-1") < text.index("api-1")
    assert "900.0" in text
