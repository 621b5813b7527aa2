"""Pure parts of the trust boundary: forwarded-token verification, role permissions, connection options."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from im_server.bus.nats import connect_options
from im_server.bus.permissions import NatsUser, authorization_config, inbox_prefix, permissions
from im_server.services.forwarded import ForwardedIdentity
from im_server.services.tokens import TokenCodec
from im_server.settings import Settings

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_forwarded_tokens_are_verified_cached_and_outlive_their_expiry_only_within_the_grace():
    codec = TokenCodec(KEY)
    revoked: set[str] = set()
    clock = Clock(1000)
    identity = ForwardedIdentity(codec, grace=100, revoked=revoked.__contains__, clock=clock, max_cached=2)
    token = codec.issue(7, "phone", "s1", now=1000, ttl=10)
    claims = identity.verify(token)
    assert claims is not None and (claims.user_id, claims.device_id) == (7, "phone")
    clock.now = 1050  # expired 40 s ago: the connection that opened with it may still send
    assert identity.verify(token) == claims
    revoked.add("s1")
    assert identity.verify(token) is None
    assert identity.verify(token, allow_revoked=True) == claims
    clock.now = 1111  # past the grace: gone, cached or not
    assert identity.verify(token, allow_revoked=True) is None
    assert identity.verify(codec.issue(7, "phone", "s2", now=0, ttl=10)) is None
    for bad in ("", None, 7, "v1.e30.AAAA", TokenCodec(b"x" * 32).issue(7, "phone", "s3", now=1111, ttl=10)):
        assert identity.verify(bad) is None
    for session in ("a", "b", "c"):  # the cache starts over when full
        assert identity.verify(codec.issue(1, "d", session, now=1111, ttl=10)) is not None
    assert len(identity._cache) <= 2


def test_role_permissions_keep_each_role_to_its_subjects():
    gateway = permissions("gateway", "im", "gw-1")
    publish, subscribe = gateway["publish"]["allow"], gateway["subscribe"]["allow"]
    assert "im.svc.send" in publish and "im.svc.ephemeral" in publish and "im.api.barrier" in publish
    assert "im.svc.sync" in publish and not any(subject.startswith("im.svc.sync") for subject in subscribe)
    assert not any(subject.startswith("im.gw.") for subject in publish)
    assert "$KV.im_nodes.gw-1" in publish and "$KV.im_routes.>" in publish
    assert not any("im_revoked" in subject and subject.startswith("$KV.") for subject in publish)
    assert not any(subject.startswith(("$JS.API.STREAM.CREATE", "$JS.API.STREAM.PURGE")) for subject in publish)
    assert subscribe == ["im.gw.gw-1", "im.sessions.barrier", "im.trace", "_INBOX.im.gw.gw-1.>"]
    assert gateway["allow_responses"] is True
    assert "im.trace" not in publish  # answers trace requests (allow_responses), never asks
    api = permissions("api", "im")
    assert "im.gw.*" in api["publish"]["allow"] and "$KV.im_revoked.>" in api["publish"]["allow"]
    assert "im.svc.send api" in api["subscribe"]["allow"] and "im.svc.sync api" in api["subscribe"]["allow"]
    assert "im.svc.sync" not in api["publish"]["allow"]
    assert "im.trace" in api["publish"]["allow"] and "im.trace" in api["subscribe"]["allow"]
    admin = permissions("admin", "im")
    assert "im.trace" not in admin["publish"]["allow"]
    assert [s for s in admin["publish"]["allow"] if s.startswith("$KV.")] == ["$KV.im_access.>"]
    assert admin["subscribe"]["allow"] == ["_INBOX.im.admin.*.>"]
    shared = permissions("gateway", None)  # any prefix: the buckets cannot be told apart
    assert "*.gw.*" in shared["subscribe"]["allow"] and "$KV.*.>" in shared["publish"]["allow"]
    assert inbox_prefix("im", "gateway", "gw-2") == "_INBOX.im.gw.gw-2"
    assert inbox_prefix("im", "admin", "im access.cli>x") == "_INBOX.im.admin.im-access-cli-x"


def test_the_server_configuration_names_public_keys_only():
    user = NatsUser.generate("gateway", "gw-1")
    text = authorization_config([user], "im", extra=[{"user": "x", "password": "y"}])
    assert user.public_key in text and user.seed not in text and user.public_key.startswith("U")
    assert '"$JS.API.STREAM.INFO.KV_im_revoked"' in text


def test_nats_settings_reach_the_connection(tmp_path: Path):
    options = connect_options(
        Settings(nats_url="nats://h:1", nats_user="api", nats_password="pw", subject_prefix="p"),
        role="api",
        name="api-1",
    )
    assert (options["user"], options["password"], options["inbox_prefix"]) == ("api", "pw", "_INBOX.p.api.api-1")
    assert "tls" not in options
    seed = tmp_path / "api.nk"
    options = connect_options(Settings(nats_url="tls://h:1", nats_nkey_seed_file=seed), role="gateway", name="gw-1")
    assert options["nkeys_seed"] == str(seed) and isinstance(options["tls"], ssl.SSLContext)
    assert options["inbox_prefix"] == "_INBOX.im.gw.gw-1"
    with pytest.raises(ValidationError, match="only one"):
        Settings(nats_user="a", nats_nkey_seed_file=seed)
    with pytest.raises(ValidationError, match="go together"):
        Settings(nats_tls_cert_file=seed)
    with pytest.raises(ValidationError, match="needs IM_NATS_USER"):
        Settings(nats_password="pw")


def test_several_nats_servers_are_tried_in_the_order_given():
    settings = Settings(nats_url=" nats://n1:4222, tls://n2:4222 ,nats://n1:4222,", nats_replicas=3)
    assert settings.nats_servers() == ["nats://n1:4222", "tls://n2:4222"]
    options = connect_options(settings, role="api", name="api-1")
    assert options["servers"] == ["nats://n1:4222", "tls://n2:4222"] and options["dont_randomize"] is True
    assert isinstance(options["tls"], ssl.SSLContext)  # one tls:// server turns TLS on for all
    assert Settings().nats_replicas == 1 and Settings().blob_replicas is None
    for bad in ["", " , ", "http://n1:4222", "nats://n1:4222 nats://n2:4222"]:
        with pytest.raises(ValidationError, match="IM_NATS_URL"):
            Settings(nats_url=bad)
    with pytest.raises(ValidationError):
        Settings(nats_replicas=6)
