"""The local copy of the revoked-session registry, and its wire format (pure, no I/O).

A logout puts one entry per ended session into the KV bucket ``<prefix>_revoked``: the key is the
session id (the ``s`` claim of its access tokens), the value ``{"u": user, "d": device, "e": until}``
with ``until`` in milliseconds since the epoch, after which no token of the session can be valid. API
nodes and gateways mirror the bucket into a :class:`RevocationTable` and refuse tokens it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

__all__ = ["REVOCATION_MARGIN", "Revocation", "RevocationTable", "decode_revocation", "encode_revocation"]

REVOCATION_MARGIN = 60
"""Seconds a revocation outlives the access-token lifetime, for clocks that differ between nodes."""

_PRUNE_EVERY = 1024
"""Expired entries are dropped after this many additions."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """One ended device session."""

    session_id: str
    user_id: int
    device_id: str
    expires_at: int
    """Milliseconds since the epoch: every access token of the session has expired by then."""


def encode_revocation(revocation: Revocation) -> bytes:
    """The KV value of a revocation (its key is the session id)."""
    return orjson.dumps({"u": revocation.user_id, "d": revocation.device_id, "e": revocation.expires_at})


def decode_revocation(session_id: str, value: bytes) -> Revocation:
    """A revocation from its KV key and value; raises ``ValueError`` when malformed."""
    try:
        data = orjson.loads(value)
        return Revocation(session_id, int(data["u"]), str(data["d"]), int(data["e"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed revocation {session_id!r}: {exc}") from None


class RevocationTable:
    """Revoked session ids; entries past their expiry are dropped now and then (they are harmless)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[str, Revocation] = {}
        self._added = 0

    def add(self, revocation: Revocation) -> None:
        """Record a revocation."""
        self._entries[revocation.session_id] = revocation
        self._added += 1
        if self._added % _PRUNE_EVERY == 0:
            self.prune()

    def discard(self, session_id: str) -> None:
        """Forget a revocation (its bucket entry expired or was removed)."""
        self._entries.pop(session_id, None)

    def is_revoked(self, session_id: str) -> bool:
        """Whether tokens of this session must be refused."""
        return session_id in self._entries

    def prune(self) -> int:
        """Drop expired entries; returns how many."""
        now_ms = self._clock() * 1000
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now_ms]
        for key in expired:
            del self._entries[key]
        return len(expired)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)
