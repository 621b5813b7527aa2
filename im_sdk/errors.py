"""Exceptions raised by the SDK. One root, two branches::

IMError
├── TransportError              the server could not be reached or the connection broke (retry)
├── ProtocolError               the server speaks a protocol this SDK does not (upgrade)
├── ConnectionReplaced          the same device connected elsewhere; this client stops
└── APIError                    the server answered with an error code
    ├── BadRequestError             bad_request, text_too_long, unknown_frame
    │   ├── UnsupportedMediaError   unsupported_media_type (the bytes are not what the kind needs)
    │   │   └── RefusedTypeError    refused_type (the server refuses this type or name extension)
    │   ├── CorruptMediaError       corrupt_media (a damaged or truncated image or clip)
    │   └── RangeNotSatisfiableError range_not_satisfiable
    ├── AuthenticationError         unauthorized, invalid_credentials
    │   └── TokenExpiredError       token_expired
    ├── ForbiddenError              forbidden
    ├── NotFoundError               not_found
    │   ├── UserNotFoundError       user_not_found
    │   ├── ConversationNotFoundError conversation_not_found
    │   └── BlobNotFoundError       blob_not_found (no such file, or not shared with you)
    ├── ConflictError               conflict
    │   ├── UsernameTakenError      username_taken
    │   └── TooManyDevicesError     too_many_devices (log another device out first)
    ├── PayloadTooLargeError        payload_too_large
    ├── RateLimitedError            rate_limited (see ``retry_after``)
    ├── UnavailableError            unavailable (retry later)
    └── InternalServerError         internal, or any 5xx
"""

from __future__ import annotations

from typing import Any

from im_schema.errors import http_status

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BlobNotFoundError",
    "ConflictError",
    "ConnectionReplaced",
    "ConversationNotFoundError",
    "CorruptMediaError",
    "ForbiddenError",
    "IMError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "RefusedTypeError",
    "TokenExpiredError",
    "TooManyDevicesError",
    "TransportError",
    "UnavailableError",
    "UnsupportedMediaError",
    "UserNotFoundError",
    "UsernameTakenError",
    "error_for",
]


class IMError(Exception):
    """Root of every SDK exception."""


class TransportError(IMError):
    """The server could not be reached, or the connection broke. Retrying may help."""


class ProtocolError(IMError):
    """The server does not speak this SDK's protocol version."""


class ConnectionReplaced(IMError):
    """The same device connected again from elsewhere, which closed this connection."""


class APIError(IMError):
    """The server refused a request with a stable error ``code``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.details = details


class BadRequestError(APIError):
    """The request did not match the schema or broke a rule (e.g. text too long)."""


class UnsupportedMediaError(BadRequestError):
    """The file is not of a type this kind of message takes (a PDF sent as an image, say)."""


class RefusedTypeError(UnsupportedMediaError):
    """The server refuses files of this type or with this name extension (executables, by default)."""


class CorruptMediaError(BadRequestError):
    """The file claims a format but cannot be read as one (a damaged or truncated picture or clip)."""


class RangeNotSatisfiableError(BadRequestError):
    """The byte range asked for starts beyond the end of the file."""


class AuthenticationError(APIError):
    """Wrong credentials, or a missing, forged or revoked token."""


class TokenExpiredError(AuthenticationError):
    """The access token expired; the clients refresh it on their own when they can."""


class ForbiddenError(APIError):
    """Authenticated but not allowed."""


class NotFoundError(APIError):
    """No such thing (or not visible to you)."""


class UserNotFoundError(NotFoundError):
    """No such user."""


class ConversationNotFoundError(NotFoundError):
    """No such conversation, or you are not in it."""


class BlobNotFoundError(NotFoundError):
    """No such file, or not one you uploaded or that was shared with you."""


class ConflictError(APIError):
    """The request conflicts with the current state."""


class UsernameTakenError(ConflictError):
    """The username is registered already."""


class TooManyDevicesError(ConflictError):
    """The account is logged in on as many devices as the server allows; ``details`` lists them."""


class PayloadTooLargeError(APIError):
    """The body or frame is over the server's limit."""


class RateLimitedError(APIError):
    """Too many requests; wait ``retry_after`` seconds."""


class UnavailableError(APIError):
    """The server cannot serve right now; retry later."""


class InternalServerError(APIError):
    """The server failed."""


_BY_CODE: dict[str, type[APIError]] = {
    "unsupported_media_type": UnsupportedMediaError,
    "refused_type": RefusedTypeError,
    "corrupt_media": CorruptMediaError,
    "range_not_satisfiable": RangeNotSatisfiableError,
    "blob_not_found": BlobNotFoundError,
    "token_expired": TokenExpiredError,
    "user_not_found": UserNotFoundError,
    "conversation_not_found": ConversationNotFoundError,
    "username_taken": UsernameTakenError,
    "too_many_devices": TooManyDevicesError,
}
"""Codes with an exception class of their own; every other code takes its status's class."""

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaError,
    416: RangeNotSatisfiableError,
    422: BadRequestError,
    429: RateLimitedError,
    500: InternalServerError,
    503: UnavailableError,
}


def error_for(
    code: str,
    message: str,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    details: list[dict[str, Any]] | None = None,
) -> APIError:
    """The most specific exception for an error code.

    A code without a class of its own takes the class of its status in the shared table
    (:data:`im_schema.errors.HTTP_STATUS`); a code this SDK does not know falls back on the response's status.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        shared = http_status(code)
        if shared is not None:
            cls = _BY_STATUS.get(shared)
        elif status is not None:
            cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else APIError)
    return (cls or APIError)(code, message, status=status, retry_after=retry_after, details=details)
