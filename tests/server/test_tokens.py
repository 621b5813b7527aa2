"""im_server.services.tokens.TokenCodec: signed, expiring access tokens."""

from __future__ import annotations

import base64
import json

import pytest

from im_server.services.tokens import Claims, ExpiredToken, InvalidToken, TokenCodec

KEY = b"k" * 32
NOW = 1_700_000_000


@pytest.fixture
def codec():
    return TokenCodec(KEY)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_roundtrip(codec):
    token = codec.issue(42, "laptop", "s" * 32, now=NOW, ttl=900)
    assert codec.verify(token, now=NOW) == Claims(
        user_id=42, device_id="laptop", session_id="s" * 32, expires_at=NOW + 900, issued_at=NOW
    )


def test_token_shape(codec):
    token = codec.issue(42, "laptop", "sid", now=NOW, ttl=900)
    version, key_id, payload, signature = token.split(".")
    assert (version, key_id) == ("v2", "default")
    assert json.loads(unb64(payload)) == {"u": 42, "d": "laptop", "s": "sid", "e": NOW + 900, "i": NOW}
    assert len(unb64(signature)) == 32  # HMAC-SHA256
    assert token.isascii()


def test_unicode_device_survives(codec):
    token = codec.issue(1, "téléphone-📱", "sid", now=NOW, ttl=60)
    assert token.isascii()
    assert codec.verify(token, now=NOW).device_id == "téléphone-📱"


def test_valid_until_just_before_expiry(codec):
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    assert codec.verify(token, now=NOW + 59.999).user_id == 1


@pytest.mark.parametrize("later", [60, 61, 10**6])
def test_expired(codec, later):
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    with pytest.raises(ExpiredToken):
        codec.verify(token, now=NOW + later)


def test_expired_is_an_invalid_token():
    assert issubclass(ExpiredToken, InvalidToken)


def test_tampered_payload(codec):
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    version, key_id, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims["u"] = 2
    forged = ".".join([version, key_id, b64(json.dumps(claims).encode()), signature])
    with pytest.raises(InvalidToken, match="bad signature") as info:
        codec.verify(forged, now=NOW)
    assert not isinstance(info.value, ExpiredToken)


def test_extended_expiry_is_rejected(codec):
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    version, key_id, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims["e"] = NOW + 10**9
    forged = ".".join([version, key_id, b64(json.dumps(claims).encode()), signature])
    with pytest.raises(InvalidToken):
        codec.verify(forged, now=NOW + 120)


@pytest.mark.parametrize("position", [0, 10, -1])
def test_tampered_signature(codec, position):
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    version, key_id, payload, signature = token.split(".")
    chars = list(signature)
    chars[position] = "A" if chars[position] != "A" else "B"
    with pytest.raises(InvalidToken):
        codec.verify(".".join([version, key_id, payload, "".join(chars)]), now=NOW)


def test_truncated_signature(codec):
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    with pytest.raises(InvalidToken):
        codec.verify(token[:-1], now=NOW)


def test_wrong_key():
    token = TokenCodec(b"a" * 32).issue(1, "d", "s", now=NOW, ttl=60)
    with pytest.raises(InvalidToken, match="bad signature"):
        TokenCodec(b"b" * 32).verify(token, now=NOW)


def test_other_version_is_rejected(codec):
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    with pytest.raises(InvalidToken):
        codec.verify("v3" + token[2:], now=NOW)


def test_signed_but_malformed_payload(codec):
    # A payload signed with the right key that is not a claims object still fails cleanly.
    for raw in (b"not json", b"[1, 2]", b'{"u": 1}', b'{"u": "x", "d": "d", "s": "s", "e": 1, "i": 1}', b"null"):
        signed = b"v2.default." + b64(raw).encode()
        token = (signed + b"." + codec._sign(signed)).decode()
        with pytest.raises(InvalidToken, match="malformed payload"):
            codec.verify(token, now=NOW)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "v1",
        "v1.",
        "v1..",
        "v1..sig",
        "v1.payload.",
        "v1.payload",
        "Bearer x",
        "not a token at all",
        "v1.!!!.@@@",
        "a.b.c.d",
        "v2.default..sig",
        "v2.default.a.b.sig",
        "v2.nokey.payload.sig",
        "v2..payload.sig",
        "v1." + "A" * 5000 + ".sig",
    ],
)
def test_garbage_strings(codec, garbage):
    with pytest.raises(InvalidToken):
        codec.verify(garbage, now=NOW)


@pytest.mark.parametrize("token", ["v1.é.sig", "ü", "v1.payload.sig\u00a0", "v1.\u2028.x"])
def test_non_ascii_is_invalid(codec, token):
    with pytest.raises(InvalidToken, match="not a token"):
        codec.verify(token, now=NOW)


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        TokenCodec(b"short")
    TokenCodec(b"x" * 16)


# Key rotation ---------------------------------------------------------------------------------------


def test_a_token_names_its_key():
    ring = {"k2": b"2" * 32, "k1": b"1" * 32}
    token = TokenCodec(ring).issue(1, "d", "s", now=NOW, ttl=60)
    assert token.split(".")[:2] == ["v2", "k2"]
    assert TokenCodec(ring, current="k1").issue(1, "d", "s", now=NOW, ttl=60).split(".")[1] == "k1"


def test_rotation_keeps_old_tokens_until_their_key_is_retired():
    old = TokenCodec({"k1": b"1" * 32})
    token = old.issue(7, "d", "s", now=NOW, ttl=60)
    # Step 1: every node learns the new key, still signing with the old one; step 2: the new key signs.
    both = TokenCodec({"k2": b"2" * 32, "k1": b"1" * 32})
    assert both.verify(token, now=NOW).user_id == 7
    fresh = both.issue(8, "d", "s", now=NOW, ttl=60)
    # Step 3: the old key is retired; its tokens stop verifying, the new ones keep working.
    retired = TokenCodec({"k2": b"2" * 32})
    assert retired.verify(fresh, now=NOW).user_id == 8
    with pytest.raises(InvalidToken, match="bad signature"):
        retired.verify(token, now=NOW)


def test_a_key_id_cannot_borrow_another_key():
    codec = TokenCodec({"k2": b"2" * 32, "k1": b"1" * 32})
    token = codec.issue(1, "d", "s", now=NOW, ttl=60)
    version, _, payload, signature = token.split(".")
    with pytest.raises(InvalidToken, match="bad signature"):
        codec.verify(".".join([version, "k1", payload, signature]), now=NOW)


def test_v1_tokens_verify_with_the_default_key(codec):
    payload = b64(json.dumps({"u": 3, "d": "d", "s": "s", "e": NOW + 60, "i": NOW}).encode())
    signed = b"v1." + payload.encode()
    token = (signed + b"." + codec._sign(signed, "default")).decode()
    assert codec.verify(token, now=NOW).user_id == 3
    with pytest.raises(InvalidToken):
        TokenCodec({"k2": b"2" * 32}).verify(token, now=NOW)


def test_ring_is_checked():
    with pytest.raises(ValueError, match="empty"):
        TokenCodec({})
    with pytest.raises(ValueError, match="not in the ring"):
        TokenCodec({"a": b"a" * 16}, current="b")
    with pytest.raises(ValueError, match="16 bytes"):
        TokenCodec({"a": b"a" * 16, "b": b"short"})


def test_settings_key_ring():
    from im_server.settings import Settings

    settings = Settings(signing_keys="new:" + "n" * 20 + ", old:" + "o" * 20, secret_key="s" * 20)
    assert settings.key_ring() == ("new", {"new": b"n" * 20, "old": b"o" * 20, "default": b"s" * 20})
    assert Settings(signing_keys="new:" + "n" * 20 + ",old:" + "o" * 20, signing_key_id="old").key_ring()[0] == "old"
    assert Settings(secret_key="s" * 20).key_ring() == ("default", {"default": b"s" * 20})
    for bad in ("nokey", "a:short", "a:" + "x" * 20 + ",a:" + "y" * 20, "bad id:" + "x" * 20):
        with pytest.raises(ValueError, match="IM_SIGNING_KEYS"):
            Settings(signing_keys=bad).key_ring()
    with pytest.raises(ValueError, match="not in the key ring"):
        Settings(secret_key="s" * 20, signing_key_id="other").key_ring()
    with pytest.raises(ValueError, match="must be set"):
        Settings().key_ring()
