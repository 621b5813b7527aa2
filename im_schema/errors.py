"""Stable error codes and the error envelope.

REST errors are ``{"error": {"code": ..., "message": ...}}`` with an HTTP status; WebSocket errors are an
``error`` frame with the same fields. Codes never change meaning; new codes may be added, so readers must
accept codes they do not know.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ErrorBody", "ErrorCode", "ErrorEnvelope"]


class ErrorCode(StrEnum):
    """Every error a client can be told about."""

    BAD_REQUEST = "bad_request"
    """Malformed JSON or a body that does not match the schema."""
    UNAUTHORIZED = "unauthorized"
    """No token, or a malformed, forged or revoked one."""
    TOKEN_EXPIRED = "token_expired"
    """The access token expired: refresh it."""
    INVALID_CREDENTIALS = "invalid_credentials"
    FORBIDDEN = "forbidden"
    """Authenticated, but not allowed to do this."""
    NOT_FOUND = "not_found"
    USER_NOT_FOUND = "user_not_found"
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    USERNAME_TAKEN = "username_taken"
    CONFLICT = "conflict"
    TEXT_TOO_LONG = "text_too_long"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    """Slow down; ``retry_after`` says for how long."""
    UNKNOWN_FRAME = "unknown_frame"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    AUTH_TIMEOUT = "auth_timeout"
    UNAVAILABLE = "unavailable"
    """A dependency of the server is down; retry later."""
    INTERNAL = "internal"


class ErrorBody(BaseModel):
    """What went wrong, for machines (``code``) and for people (``message``)."""

    model_config = ConfigDict(extra="ignore")

    code: str
    """An :class:`ErrorCode` value; kept a plain string so that readers tolerate newer codes."""
    message: str
    retry_after: float | None = None
    """Seconds to wait before retrying, for ``rate_limited`` and ``unavailable``."""
    details: list[dict[str, Any]] | None = None
    """Validation problems, one per field, when the request did not match the schema."""


class ErrorEnvelope(BaseModel):
    """The body of every REST error response."""

    error: ErrorBody
