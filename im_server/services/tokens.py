"""Signed, expiring access tokens bound to one device session, under a ring of rotating keys.

A token is ``v2.<key id>.<payload>.<signature>``: the payload is base64url JSON ``{"u": user,
"d": device, "s": session, "e": expires, "i": issued}`` (seconds since the epoch) and the signature is
HMAC-SHA256 over ``v2.<key id>.<payload>`` with the key of that id. New tokens are signed with the
ring's current key; a token verifies while its key is in the ring, so adding a key and later removing
the old one rotates keys without logging anyone out. Tokens of the earlier form ``v1.<payload>.<signature>``
(no key id) verify with the key ``default`` (``IM_SECRET_KEY``). API and gateway nodes verify tokens
without a database round trip.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

__all__ = ["LEGACY_KEY_ID", "Claims", "ExpiredToken", "InvalidToken", "TokenCodec"]

_VERSION = b"v2"
_LEGACY = b"v1"
LEGACY_KEY_ID = "default"
"""The key that verifies ``v1`` tokens (issued before tokens named their key)."""


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
    """Issues tokens with the current key of a ring and verifies tokens of every key in it.

    ``keys`` is one key (it gets the id ``default``) or a mapping of key ids to keys; ``current`` names the
    key that signs new tokens (the first of the mapping if unset).
    """

    def __init__(self, keys: bytes | Mapping[str, bytes], *, current: str | None = None) -> None:
        ring = {LEGACY_KEY_ID: keys} if isinstance(keys, bytes) else dict(keys)
        if not ring:
            raise ValueError("the key ring is empty")
        for key_id, key in ring.items():
            if len(key) < 16:
                raise ValueError(f"the signing key {key_id!r} must have at least 16 bytes")
        self._keys = ring
        self.current = current or next(iter(ring))
        """The id of the key that signs new tokens."""
        if self.current not in ring:
            raise ValueError(f"the current key {self.current!r} is not in the ring")
        self._header = _VERSION + b"." + self.current.encode()

    @classmethod
    def from_ring(cls, current: str, keys: Mapping[str, bytes]) -> TokenCodec:
        """A codec for ``Settings.key_ring()``."""
        return cls(keys, current=current)

    def _sign(self, signed: bytes, key_id: str | None = None) -> bytes:
        key = self._keys[key_id or self.current]
        return _b64encode(hmac.new(key, signed, hashlib.sha256).digest())

    def issue(self, user_id: int, device_id: str, session_id: str, *, now: int, ttl: int) -> str:
        """A token valid for ``ttl`` seconds from ``now``, signed with the current key."""
        payload = orjson.dumps({"u": user_id, "d": device_id, "s": session_id, "e": now + ttl, "i": now})
        signed = self._header + b"." + _b64encode(payload)
        return (signed + b"." + self._sign(signed)).decode()

    def verify(self, token: str, *, now: float) -> Claims:
        """The claims of a genuine token; raises :class:`InvalidToken` or :class:`ExpiredToken`."""
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError as exc:
            raise InvalidToken("not a token") from exc
        signed, _, signature = raw.rpartition(b".")
        version, _, rest = signed.partition(b".")
        if version == _VERSION:
            key_id_bytes, _, payload = rest.partition(b".")
            key_id = key_id_bytes.decode()
        elif version == _LEGACY:
            key_id, payload = LEGACY_KEY_ID, rest
        else:
            raise InvalidToken("not a token")
        if not payload or not signature or b"." in payload:
            raise InvalidToken("not a token")
        if key_id not in self._keys:
            # Retired, or never ours: the same answer as a forgery.
            raise InvalidToken("bad signature")
        if not hmac.compare_digest(self._sign(signed, key_id), signature):
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
