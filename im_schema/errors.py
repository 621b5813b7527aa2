"""Stable error codes and the error envelope.

REST errors are ``{"error": {"code": ..., "message": ...}}`` with an HTTP status; WebSocket errors are an
``error`` frame with the same fields. Codes never change meaning; new codes may be added, so readers must
accept codes they do not know.

:data:`HTTP_STATUS` is the one table from a code to its HTTP status: the API answers with it, and the SDK picks
its exception class from it for codes it has no class of its own for (a WebSocket error frame carries no
status).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

__all__ = ["HTTP_STATUS", "ErrorBody", "ErrorCode", "ErrorEnvelope", "http_status"]


class ErrorCode(StrEnum):
    """Every error a client can be told about."""

    BAD_REQUEST = "bad_request"
    """Malformed JSON or a body that does not match the schema."""
    UNAUTHORIZED = "unauthorized"
    """No token, or a malformed, forged or revoked one."""
    TOKEN_EXPIRED = "token_expired"
    """The access token expired: refresh it."""
    INVALID_CREDENTIALS = "invalid_credentials"
    ACCOUNT_DISABLED = "account_disabled"
    FORBIDDEN = "forbidden"
    """Authenticated, but not allowed to do this."""
    NOT_A_MEMBER = "not_a_member"
    """Only members of the group may do this."""
    MUTED = "muted"
    """Muted in this group (by an admin, or the whole group is muted)."""
    GROUP_DISSOLVED = "group_dissolved"
    NOT_FRIENDS = "not_friends"
    """This server requires friendship for direct messages."""
    USER_BLOCKED = "user_blocked"
    """You blocked this user: unblock them before adding them to a group or letting them in."""
    NOT_FOUND = "not_found"
    USER_NOT_FOUND = "user_not_found"
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    GROUP_NOT_FOUND = "group_not_found"
    REQUEST_NOT_FOUND = "request_not_found"
    INVITATION_NOT_FOUND = "invitation_not_found"
    """No such pending invitation that you may see (it may have expired or been withdrawn)."""
    USERNAME_TAKEN = "username_taken"
    CONFLICT = "conflict"
    ALREADY_FRIENDS = "already_friends"
    ALREADY_MEMBER = "already_member"
    GROUP_FULL = "group_full"
    TOO_MANY_DEVICES = "too_many_devices"
    """The account is logged in on as many devices as the server allows; log one out first."""
    DEVICE_NOT_FOUND = "device_not_found"
    """None of my logged-in devices has this id."""
    TEXT_TOO_LONG = "text_too_long"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    """Slow down; ``retry_after`` says for how long."""
    QUOTA_EXCEEDED = "quota_exceeded"
    """A per-user quota is used up (bytes uploaded today, uploads at once); ``retry_after`` says when it frees."""
    UNKNOWN_FRAME = "unknown_frame"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    AUTH_TIMEOUT = "auth_timeout"
    BLOB_NOT_FOUND = "blob_not_found"
    """No such blob, or not one you may use (you did not upload it and it was not shared with you)."""
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """The bytes are not of a type this kind of message accepts (a PDF sent as an image, say)."""
    REFUSED_TYPE = "refused_type"
    """The server refuses files of this type or with this name extension (executables, by default)."""
    CORRUPT_MEDIA = "corrupt_media"
    """The bytes claim a format but cannot be read as one (a truncated or damaged image or clip)."""
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    """The requested byte range starts beyond the end of the file."""
    UNAVAILABLE = "unavailable"
    """A dependency of the server is down; retry later."""
    STORAGE_BUSY = "storage_busy"
    """The database is busy (lock contention); retry soon with the same ``client_msg_id``. HTTP 503."""
    STORAGE_FULL = "storage_full"
    """The database's disk is full: nothing was stored; retrying helps only once an operator freed space. HTTP 503."""
    STORAGE_UNAVAILABLE = "storage_unavailable"
    """The database cannot be reached (connection lost, I/O error): nothing was stored; retry later. HTTP 503."""
    INTERNAL = "internal"


HTTP_STATUS: Final[Mapping[ErrorCode, int]] = MappingProxyType(
    {
        ErrorCode.BAD_REQUEST: 400,
        ErrorCode.TEXT_TOO_LONG: 400,
        ErrorCode.UNKNOWN_FRAME: 400,
        ErrorCode.UNSUPPORTED_PROTOCOL: 400,
        ErrorCode.UNAUTHORIZED: 401,
        ErrorCode.TOKEN_EXPIRED: 401,
        ErrorCode.INVALID_CREDENTIALS: 401,
        ErrorCode.AUTH_TIMEOUT: 401,
        ErrorCode.ACCOUNT_DISABLED: 403,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.NOT_A_MEMBER: 403,
        ErrorCode.MUTED: 403,
        ErrorCode.GROUP_DISSOLVED: 403,
        ErrorCode.NOT_FRIENDS: 403,
        ErrorCode.USER_BLOCKED: 403,
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.USER_NOT_FOUND: 404,
        ErrorCode.CONVERSATION_NOT_FOUND: 404,
        ErrorCode.GROUP_NOT_FOUND: 404,
        ErrorCode.REQUEST_NOT_FOUND: 404,
        ErrorCode.INVITATION_NOT_FOUND: 404,
        ErrorCode.DEVICE_NOT_FOUND: 404,
        ErrorCode.BLOB_NOT_FOUND: 404,
        ErrorCode.USERNAME_TAKEN: 409,
        ErrorCode.CONFLICT: 409,
        ErrorCode.ALREADY_FRIENDS: 409,
        ErrorCode.ALREADY_MEMBER: 409,
        ErrorCode.GROUP_FULL: 409,
        ErrorCode.TOO_MANY_DEVICES: 409,
        ErrorCode.PAYLOAD_TOO_LARGE: 413,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
        ErrorCode.REFUSED_TYPE: 415,
        ErrorCode.RANGE_NOT_SATISFIABLE: 416,
        ErrorCode.CORRUPT_MEDIA: 422,
        ErrorCode.RATE_LIMITED: 429,
        ErrorCode.QUOTA_EXCEEDED: 429,
        ErrorCode.INTERNAL: 500,
        ErrorCode.UNAVAILABLE: 503,
        ErrorCode.STORAGE_BUSY: 503,
        ErrorCode.STORAGE_FULL: 503,
        ErrorCode.STORAGE_UNAVAILABLE: 503,
    }
)
"""The HTTP status of every error code: the only such table (a test checks that it covers every code)."""


def http_status(code: str) -> int | None:
    """The HTTP status of ``code``, or ``None`` for a code this version does not know."""
    try:
        return HTTP_STATUS[ErrorCode(code)]
    except ValueError:
        return None


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
