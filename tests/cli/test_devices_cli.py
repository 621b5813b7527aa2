"""`im devices`, `im devices logout`, `im logout --all`, and `im listen` resuming after a restart."""

from __future__ import annotations

import json
import os
import uuid

from tests.support.cli import Listener
from tests.support.cluster import PASSWORD


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _login(im, url: str, profile: str, username: str, device: str) -> None:
    result = im(
        "--server", url, "-P", profile, "login", username, "--device", device, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output


def _register(im, url: str, username: str) -> None:
    result = im("--server", url, "-P", "x", "register", username, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def test_devices_list_and_logout(sqlite_cluster, im):
    url = sqlite_cluster.url
    alice = _name("alice")
    _register(im, url, alice)
    for profile in ("phone", "laptop", "tablet"):
        _login(im, url, profile, alice, profile)

    listed = json.loads(im("-P", "phone", "devices", "--json").stdout)
    # Each login also made the live session of `im listen` and `im chat` (DEVICE-live).
    assert {d["device_id"] for d in listed if d["device_id"].endswith("-live")} == {
        "phone-live",
        "laptop-live",
        "tablet-live",
    }
    assert [(d["device_id"], d["current"], d["connected"]) for d in listed if not d["device_id"].endswith("-live")] == [
        ("phone", True, False),
        ("laptop", False, False),
        ("tablet", False, False),
    ]
    assert json.loads(im("-P", "phone", "devices", "list", "--json").stdout) == listed
    table = im("-P", "phone", "devices").stdout
    assert "phone (this one)" in table and "phone-live (this one, live)" in table and "last seen" in table

    logged_out = im("-P", "phone", "devices", "logout", "laptop")
    assert logged_out.exit_code == 0 and "logged out laptop" in logged_out.stdout
    refused = im("-P", "laptop", "whoami")
    assert refused.exit_code == 4 and "logged out" in refused.stderr
    missing = im("-P", "phone", "devices", "logout", "laptop")
    assert missing.exit_code == 1 and "no device 'laptop'" in missing.stderr

    # Logging out this device through `devices logout` forgets the profile's tokens.
    result = json.loads(im("-P", "tablet", "devices", "logout", "tablet", "--json").stdout)
    assert result == {"devices": ["tablet"], "current": True}
    assert "not logged in" in im("-P", "tablet", "whoami").stderr

    _login(im, url, "laptop", alice, "laptop")
    everything = im("-P", "laptop", "logout", "--all")
    assert everything.exit_code == 0, everything.output
    assert "logged out 4 devices: laptop, laptop-live, phone, phone-live" in everything.stdout
    assert im("-P", "phone", "whoami").exit_code == 4
    assert "not logged in" in im("-P", "laptop", "whoami").stderr
    assert im("-P", "laptop", "logout", "--all").exit_code == 4


def test_listen_resumes_after_a_restart(sqlite_cluster, im, config_dir):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    for name in (alice, bob):
        _register(im, url, name)
        _login(im, url, name[:3], name, "term")
    im("-P", "ali", "send", bob, "one")
    im("-P", "ali", "send", bob, "two")

    env = {**os.environ, "IM_CONFIG_DIR": str(config_dir), "IM_PROFILE": "bob", "PYTHONFAULTHANDLER": "1"}
    listener = Listener(env)
    try:
        assert [m["content"]["text"] for m in listener.wait(2)] == ["one", "two"]
    finally:
        assert listener.interrupt() == 130
    assert (config_dir / "state" / "bob.sqlite3").exists()

    im("-P", "ali", "send", bob, "three")  # while nobody listens
    listener = Listener(env)
    try:
        assert [m["content"]["text"] for m in listener.wait(1)] == ["three"]  # not one and two again
        im("-P", "ali", "send", bob, "four")
        assert [m["content"]["text"] for m in listener.wait(2)] == ["three", "four"]
    finally:
        assert listener.interrupt() == 130

    assert im("-P", "bob", "logout").exit_code == 0
    assert not (config_dir / "state" / "bob.sqlite3").exists()
