"""What the realtime connection's events mean, without I/O: reconnect (and how soon) or give up, resync.

- A close is classified by :func:`classify_close`; :func:`reconnect_delay` says how soon to come back:
  at once after ``4013`` (too slow to read: :class:`TooSlow`), within :data:`GOING_AWAY_SPREAD` seconds
  after ``4010``/``1001`` (:class:`GoingAway`), else after the next backoff delay. Every reconnect is
  followed by a resync ("conversations since" the cursor).
- The first frame after ``auth`` is judged by :func:`auth_answer`: ``ready``, or refresh the token
  and reconnect (:data:`REFRESH`), or the error to raise.
- A ``resync`` frame, and :data:`QUIET` (what the client reads when nothing came for its
  ``resync_after`` seconds), mean a resync on the same connection.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from im_schema.frames import ErrorFrame, ReadyFrame, ResyncFrame
from im_schema.limits import (
    CLOSE_AUTH_FAILED,
    CLOSE_AUTH_TIMEOUT,
    CLOSE_GOING_AWAY,
    CLOSE_PROTOCOL_UNSUPPORTED,
    CLOSE_REPLACED,
    CLOSE_SESSION_REVOKED,
    CLOSE_TOO_SLOW,
)

from ..errors import (
    AuthenticationError,
    ConnectionReplaced,
    IMError,
    ProtocolError,
    TransportError,
    error_for,
)

__all__ = [
    "GOING_AWAY_SPREAD",
    "QUIET",
    "REFRESH",
    "GoingAway",
    "RefreshToken",
    "TooSlow",
    "auth_answer",
    "classify_close",
    "reconnect_delay",
]

GOING_AWAY_SPREAD = 2.0
"""Clients of a draining node come back spread over this many seconds."""


QUIET = ResyncFrame(reason="quiet")
"""Stands for a connection that brought nothing for ``resync_after`` seconds: resync, as a last resort
against a push lost without anyone noticing."""


class GoingAway(TransportError):
    """The node is draining or stopping; reconnect soon, probably to another node."""


class TooSlow(TransportError):
    """The gateway closed the connection because this client read its pushes too slowly (``4013``):
    reconnect at once and resync."""


def classify_close(code: int | None, reason: str | None, error_code: str | None = None) -> IMError:
    """The exception that a close (and the error frame before it, if any) stands for."""
    text = reason or f"connection closed with code {code}"
    if code == CLOSE_PROTOCOL_UNSUPPORTED or error_code == "unsupported_protocol":
        return ProtocolError(text)
    if code == CLOSE_REPLACED:
        return ConnectionReplaced(text)
    if code == CLOSE_SESSION_REVOKED:
        return AuthenticationError("unauthorized", reason or "this device was logged out", status=401)
    if code == CLOSE_AUTH_FAILED or error_code in ("unauthorized", "token_expired"):
        return error_for(error_code or "unauthorized", text, status=401)
    if code == CLOSE_GOING_AWAY or code == 1001:
        return GoingAway(text)
    if code == CLOSE_TOO_SLOW:
        return TooSlow(text)
    if code == CLOSE_AUTH_TIMEOUT:
        return TransportError(text)
    return TransportError(text)


class RefreshToken:
    """The token expired during the handshake: refresh it, then reconnect."""


REFRESH = RefreshToken()
"""What :func:`auth_answer` returns for an expired token."""


def auth_answer(frame: object, close_code: int | None, close_reason: str | None) -> ReadyFrame | RefreshToken | IMError:
    """What the first frame after ``auth`` means (``None`` if the connection closed instead)."""
    if isinstance(frame, ReadyFrame):
        return frame
    if isinstance(frame, ErrorFrame):
        if frame.code == "token_expired":
            return REFRESH
        return classify_close(close_code, frame.message, frame.code)
    return classify_close(close_code, close_reason)


def reconnect_delay(exc: BaseException, delays: Iterator[float]) -> float:
    """Seconds to wait before reconnecting after ``exc``."""
    if isinstance(exc, TooSlow):
        return 0.0  # the client is alive and caught up by sync; it lost only its push queue
    if isinstance(exc, GoingAway):
        return random.uniform(0, GOING_AWAY_SPREAD)
    return next(delays)
