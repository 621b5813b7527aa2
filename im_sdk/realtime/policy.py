"""What a closed realtime connection means: reconnect (and how soon) or give up."""

from __future__ import annotations

import random
from collections.abc import Iterator

from im_schema.limits import (
    CLOSE_AUTH_FAILED,
    CLOSE_AUTH_TIMEOUT,
    CLOSE_GOING_AWAY,
    CLOSE_PROTOCOL_UNSUPPORTED,
    CLOSE_REPLACED,
    CLOSE_SESSION_REVOKED,
)

from ..errors import (
    AuthenticationError,
    ConnectionReplaced,
    IMError,
    ProtocolError,
    TransportError,
    error_for,
)

__all__ = ["GoingAway", "classify_close", "reconnect_delay"]

GOING_AWAY_SPREAD = 2.0
"""Clients of a draining node come back spread over this many seconds."""


class GoingAway(TransportError):
    """The node is draining or stopping; reconnect soon, probably to another node."""


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
    if code == CLOSE_AUTH_TIMEOUT:
        return TransportError(text)
    return TransportError(text)


def reconnect_delay(exc: BaseException, delays: Iterator[float]) -> float:
    """Seconds to wait before reconnecting after ``exc``."""
    if isinstance(exc, GoingAway):
        return random.uniform(0, GOING_AWAY_SPREAD)
    return next(delays)
