"""Signed, expiring access tokens bound to one device session.

A token is ``v1.<payload>.<signature>``: the payload is base64url JSON ``{"u": user, "d": device,
"s": session, "e": expires, "i": issued}`` (seconds since the epoch) and the signature is HMAC-SHA256
over ``v1.<payload>`` with the cluster's shared key. API and gateway nodes verify tokens without a
database round trip.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

import orjson

__all__ = ["Claims", "ExpiredToken", "InvalidToken", "TokenCodec"]

_VERSION = b"v1"


class InvalidToken(Exception):
    """Malformed, forged or unsigned by this cluster."""


class ExpiredToken(InvalidToken):
    """Well-formed and genuine, but past its expiry."""


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token says."""

    user_id: int
    device_id: str
    session_id: str
    expires_at: int
    issued_at: int


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64decode(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class TokenCodec:
    """Issues and verifies access tokens with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must have at least 16 bytes")
        self._key = key

    def _sign(self, signed: bytes) -> bytes:
        return _b64encode(hmac.new(self._key, signed, hashlib.sha256).digest())

    def issue(self, user_id: int, device_id: str, session_id: str, *, now: int, ttl: int) -> str:
        """A token valid for ``ttl`` seconds from ``now``."""
        payload = orjson.dumps({"u": user_id, "d": device_id, "s": session_id, "e": now + ttl, "i": now})
        signed = _VERSION + b"." + _b64encode(payload)
        return (signed + b"." + self._sign(signed)).decode()

    def verify(self, token: str, *, now: float) -> Claims:
        """The claims of a genuine token; raises :class:`InvalidToken` or :class:`ExpiredToken`."""
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError as exc:
            raise InvalidToken("not a token") from exc
        signed, _, signature = raw.rpartition(b".")
        version, _, payload = signed.partition(b".")
        if version != _VERSION or not payload or not signature:
            raise InvalidToken("not a token")
        if not hmac.compare_digest(self._sign(signed), signature):
            raise InvalidToken("bad signature")
        try:
            data = orjson.loads(_b64decode(payload))
            claims = Claims(
                user_id=int(data["u"]),
                device_id=str(data["d"]),
                session_id=str(data["s"]),
                expires_at=int(data["e"]),
                issued_at=int(data["i"]),
            )
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidToken("malformed payload") from exc
        if claims.expires_at <= now:
            raise ExpiredToken("expired")
        return claims
