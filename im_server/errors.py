"""Errors meant for clients.

Only :class:`ServerError` subclasses reach a client, as a REST envelope or a WebSocket error frame; every
other exception is logged and answered with ``internal``. This module is the only place that builds them::

    ServerError
    ├── BadRequest          400
    ├── Unauthorized        401
    ├── Forbidden           403
    ├── NotFound            404
    ├── Conflict            409
    ├── PayloadTooLarge     413
    ├── UnsupportedMedia    415
    ├── RangeNotSatisfiable 416
    ├── Unprocessable       422
    ├── RateLimited         429
    └── Unavailable         503
"""

from __future__ import annotations

from typing import Any, ClassVar

from im_schema.errors import ErrorBody, ErrorCode, ErrorEnvelope
from im_schema.frames import ErrorFrame

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMedia",
    "storage_error",
]


class ServerError(Exception):
    """An error a client is told about, with a stable code."""

    status: ClassVar[int] = 400
    default_code: ClassVar[ErrorCode] = ErrorCode.BAD_REQUEST

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        retry_after: float | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.retry_after = retry_after
        self.details = details

    def body(self) -> ErrorBody:
        """The error as the shared schema describes it."""
        return ErrorBody(code=self.code.value, message=self.message, retry_after=self.retry_after, details=self.details)

    def envelope(self) -> dict[str, Any]:
        """The REST response body."""
        return ErrorEnvelope(error=self.body()).model_dump(mode="json", exclude_none=True)

    def frame(self, client_msg_id: str | None = None) -> ErrorFrame:
        """The WebSocket error frame."""
        return ErrorFrame(
            code=self.code.value,
            message=self.message,
            client_msg_id=client_msg_id,
            retry_after=self.retry_after,
        )


class BadRequest(ServerError):
    status = 400
    default_code = ErrorCode.BAD_REQUEST


class Unauthorized(ServerError):
    status = 401
    default_code = ErrorCode.UNAUTHORIZED


class Forbidden(ServerError):
    status = 403
    default_code = ErrorCode.FORBIDDEN


class NotFound(ServerError):
    status = 404
    default_code = ErrorCode.NOT_FOUND


class Conflict(ServerError):
    status = 409
    default_code = ErrorCode.CONFLICT


class PayloadTooLarge(ServerError):
    status = 413
    default_code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMedia(ServerError):
    status = 415
    default_code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class RangeNotSatisfiable(ServerError):
    status = 416
    default_code = ErrorCode.RANGE_NOT_SATISFIABLE


class Unprocessable(ServerError):
    status = 422
    default_code = ErrorCode.CORRUPT_MEDIA


class RateLimited(ServerError):
    status = 429
    default_code = ErrorCode.RATE_LIMITED


class Unavailable(ServerError):
    status = 503
    default_code = ErrorCode.UNAVAILABLE


_STORAGE_ERRORS = {
    "busy": (ErrorCode.STORAGE_BUSY, "the database is busy; retry with the same client_msg_id", 1.0),
    "full": (ErrorCode.STORAGE_FULL, "the database's disk is full; nothing was stored", 30.0),
    "unavailable": (ErrorCode.STORAGE_UNAVAILABLE, "the database cannot be reached; nothing was stored", 5.0),
}


def storage_error(kind: str) -> Unavailable:
    """The error a client is told for a storage fault of ``kind`` (see :mod:`im_server.storage.faults`)."""
    code, message, retry_after = _STORAGE_ERRORS.get(kind, _STORAGE_ERRORS["unavailable"])
    return Unavailable(message, code=code, retry_after=retry_after)
