"""Who sent a forwarded send or event: the device whose access token came with it.

Gateways forward each connection's sends, typing and presence with the access token the connection
authenticated with (once per connection per request). The API node verifies the token (HMAC with the
cluster's key) and takes user and device from it, never from the payload: NATS credentials of the
gateway role alone cannot store a message as anybody (docs/security.md).

A WebSocket outlives the token it opened with (the gateway checked its expiry at connect), so a
genuine token is accepted past its expiry for as long as its session could live (``grace``, the
refresh-token lifetime), and never once its session is logged out. Verified tokens are cached by
their text, so the hot path is a dict lookup and a set lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .tokens import Claims, InvalidToken, TokenCodec

__all__ = ["ForwardedIdentity"]

MAX_CACHED = 100_000
"""Verified tokens remembered (about one per connected device); the cache starts over when full."""


def _never(_: str) -> bool:
    return False


class ForwardedIdentity:
    """Verifies the tokens gateways forward; ``revoked`` says whether a session id was logged out."""

    def __init__(
        self,
        codec: TokenCodec,
        *,
        grace: float,
        revoked: Callable[[str], bool] = _never,
        clock: Callable[[], float] = time.time,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._codec = codec
        self._grace = grace
        self._revoked = revoked
        self._clock = clock
        self._max_cached = max_cached
        self._cache: dict[str, Claims] = {}

    def verify(self, token: object, *, allow_revoked: bool = False) -> Claims | None:
        """The claims of a genuine token of a live session, else ``None``.

        ``allow_revoked`` accepts a logged-out session too (a presence "offline" sent after the gateway
        closed the connection of a device that logged out).
        """
        if not isinstance(token, str):
            return None
        now = self._clock()
        claims = self._cache.get(token)
        if claims is None:
            try:
                claims = self._codec.verify(token, now=now - self._grace)
            except InvalidToken:
                return None
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[token] = claims
        elif claims.expires_at + self._grace <= now:
            del self._cache[token]
            return None
        if not allow_revoked and self._revoked(claims.session_id):
            return None
        return claims
