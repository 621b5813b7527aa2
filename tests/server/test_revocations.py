"""Revoked sessions, without I/O: the table every node mirrors, its wire format, and the gateway's check."""

from __future__ import annotations

import json

import pytest

from im_schema.limits import CLOSE_SESSION_REVOKED
from im_server.bus.revocations import Revocation, RevocationTable, decode_revocation, encode_revocation
from im_server.gateway.session import Authenticated, Close, GatewaySession
from im_server.services.tokens import TokenCodec

NOW = 1_700_000_000


def test_revocations_round_trip_and_reject_garbage():
    revocation = Revocation("abc123", 7, "phone", NOW * 1000)
    assert decode_revocation("abc123", encode_revocation(revocation)) == revocation
    for bad in (b"", b"{}", b'{"u": "x", "d": "p", "e": 1}', b"[1]"):
        with pytest.raises(ValueError, match="malformed revocation"):
            decode_revocation("abc123", bad)


def test_table_holds_revocations_until_they_expire():
    now = [NOW]
    table = RevocationTable(clock=lambda: now[0])
    table.add(Revocation("s1", 1, "a", (NOW + 10) * 1000))
    table.add(Revocation("s2", 1, "b", (NOW + 20) * 1000))
    assert table.is_revoked("s1") and "s2" in table and not table.is_revoked("s3")
    now[0] = NOW + 15
    assert table.prune() == 1
    assert not table.is_revoked("s1") and table.is_revoked("s2")
    table.discard("s2")
    assert len(table) == 0


def test_table_prunes_now_and_then_on_its_own():
    now = [NOW]
    table = RevocationTable(clock=lambda: now[0])
    for number in range(1000):
        table.add(Revocation(f"old{number}", 1, "a", NOW * 1000))  # expired by the time of the prune
    now[0] = NOW + 1
    for number in range(100):
        table.add(Revocation(f"new{number}", 1, "a", (NOW + 60) * 1000))
    assert len(table) == 100


def test_gateway_refuses_a_revoked_session_with_4012():
    codec = TokenCodec(b"test-signing-key-0123456789")
    revoked = {"gone"}
    token = codec.issue(7, "phone", "gone", now=NOW, ttl=3600)
    session = GatewaySession(codec, "gw", clock=lambda: NOW, revoked=revoked.__contains__)
    outcome = session.open(json.dumps({"type": "auth", "token": token, "protocol": 1}))
    assert isinstance(outcome, Close) and outcome.code == CLOSE_SESSION_REVOKED
    assert json.loads(outcome.data)["code"] == "unauthorized"
    assert session.session_id is None

    fresh = GatewaySession(codec, "gw", clock=lambda: NOW, revoked=revoked.__contains__)
    outcome = fresh.open(json.dumps({"type": "auth", "token": codec.issue(7, "phone", "live", now=NOW, ttl=60)}))
    assert isinstance(outcome, Authenticated) and outcome.session_id == "live" == fresh.session_id
