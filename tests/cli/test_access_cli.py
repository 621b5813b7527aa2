"""`im server access`: managing the cluster's IP lists from the command line, against a real cluster."""

from __future__ import annotations

import json
import logging

import pytest


@pytest.fixture(autouse=True)
def _admin_credentials(nats_server, monkeypatch):
    """The command connects with the admin role's NATS credentials, as an operator's shell would."""
    for name, value in nats_server.settings("admin").items():
        if name != "nats_url":
            monkeypatch.setenv(f"IM_{name.upper()}", str(value))


def test_allow_deny_remove_list(im, make_cluster):
    cluster = make_cluster(gateways=1, access_refresh=0.05)
    api, gateway = cluster.api.node, cluster.gateways[0]
    where = ["--nats", cluster.settings.nats_url, "--prefix", cluster.settings.subject_prefix]

    server_log = logging.getLogger("im_server")
    level = server_log.level
    empty = im("server", "access", "list", *where)
    assert empty.exit_code == 0 and "every address may connect" in empty.stdout
    assert server_log.level == level  # quiet while it runs, as it was afterwards (a shell or a test goes on)

    denied = im("server", "access", "deny", "203.0.113.9/24", "--note", "scanner", *where)
    assert denied.exit_code == 0, denied.output
    assert "deny 203.0.113.0/24 (scanner)" in denied.stdout
    assert im("server", "access", "allow", "2001:DB8::/32", *where).exit_code == 0
    cluster.loop.run(cluster._until(lambda: not api.access.rules.admits("203.0.113.1")))
    cluster.loop.run(cluster._until(lambda: not gateway.access.rules.admits("198.51.100.1")))

    listed = im("server", "access", "list", "--json", *where)
    assert [(e["list"], e["cidr"], e["note"]) for e in json.loads(listed.stdout)] == [
        ("allow", "2001:db8::/32", ""),
        ("deny", "203.0.113.0/24", "scanner"),
    ]
    table = im("server", "access", "list", *where).stdout
    assert "203.0.113.0/24" in table and "scanner" in table

    removed = im("server", "access", "remove", "203.0.113.0/24", *where)
    assert removed.exit_code == 0 and "removed 203.0.113.0/24 from deny" in removed.stdout
    assert im("server", "access", "remove", "2001:db8::/32", "--list", "allow", *where).exit_code == 0
    cluster.loop.run(cluster._until(lambda: api.access.rules.admits("198.51.100.1")))
    cluster.loop.run(cluster._until(lambda: gateway.access.rules.admits("203.0.113.1")))


def test_bad_input_is_a_clear_error(im, make_cluster):
    cluster = make_cluster(gateways=0)
    where = ["--nats", cluster.settings.nats_url, "--prefix", cluster.settings.subject_prefix]
    for args in (
        ("deny", "not-a-network"),
        ("allow", "10.0.0.0/33"),
        ("deny", "1.2.3.4/8/9"),
        ("remove", "10.0.0.0/8"),
        ("remove", "10.0.0.0/8", "--list", "grey"),
    ):
        result = im("server", "access", *args, *where)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output
    bad_prefix = im("server", "access", "list", "--nats", cluster.settings.nats_url, "--prefix", "no spaces")
    assert bad_prefix.exit_code == 1 and "configuration error" in bad_prefix.output


def test_the_nats_of_im_server_up_in_this_directory_is_found(im, make_cluster, tmp_path, monkeypatch):
    # `im server up` picks a free port for NATS: run where its data dir is, the command uses that NATS
    # (it used to try 127.0.0.1:4222 and time out).
    cluster = make_cluster(gateways=0)
    address = cluster.settings.nats_url.split("://", 1)[1]
    conf = tmp_path / "im-data" / "nats" / "nats.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f'server_name: "x"\nlisten: "{address}"\ncluster {{\n  listen: "127.0.0.1:1"\n}}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IM_NATS_URL", raising=False)
    listed = im("server", "access", "list", "--prefix", cluster.settings.subject_prefix)
    assert listed.exit_code == 0, listed.output
    assert "every address may connect" in listed.stdout
    assert "disconnected" not in listed.output  # no log lines of the bus on the terminal
