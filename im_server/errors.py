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
    ├── Unavailable         503
    └── Refusal             any: a rule of the storage layer turned the operation down

The status of an error is its code's, from :data:`im_schema.errors.HTTP_STATUS` (the one table; the classes
only choose a default code). Storage raises :class:`Refusal` (or returns one, for a batch) with the code the
client is told, so services need no tables of their own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from im_schema.errors import HTTP_STATUS, ErrorBody, ErrorCode, ErrorEnvelope
from im_schema.frames import ErrorFrame

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RateLimited",
    "Refusal",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMedia",
    "storage_error",
]


class ServerError(Exception):
    """An error a client is told about, with a stable code."""

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

    @property
    def status(self) -> int:
        """The HTTP status, from the code (:data:`im_schema.errors.HTTP_STATUS`)."""
        return HTTP_STATUS[self.code]

    def body(self) -> ErrorBody:
        """The error as the shared schema describes it."""
        return ErrorBody(code=self.code.value, message=self.message, retry_after=self.retry_after, details=self.details)

    def envelope(self) -> dict[str, Any]:
        """The REST response body."""
        return ErrorEnvelope(error=self.body()).model_dump(mode="json", exclude_none=True)

    def frame(self, client_msg_id: str | None = None, *, frame_id: str | None = None) -> ErrorFrame:
        """The WebSocket error frame (answering the ``send`` of ``client_msg_id`` or the frame ``frame_id``)."""
        return ErrorFrame(
            code=self.code.value,
            message=self.message,
            client_msg_id=client_msg_id,
            id=frame_id,
            retry_after=self.retry_after,
        )


class BadRequest(ServerError):
    default_code = ErrorCode.BAD_REQUEST


class Unauthorized(ServerError):
    default_code = ErrorCode.UNAUTHORIZED


class Forbidden(ServerError):
    default_code = ErrorCode.FORBIDDEN


class NotFound(ServerError):
    default_code = ErrorCode.NOT_FOUND


class Conflict(ServerError):
    default_code = ErrorCode.CONFLICT


class PayloadTooLarge(ServerError):
    default_code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMedia(ServerError):
    default_code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class RangeNotSatisfiable(ServerError):
    default_code = ErrorCode.RANGE_NOT_SATISFIABLE


class Unprocessable(ServerError):
    default_code = ErrorCode.CORRUPT_MEDIA


class RateLimited(ServerError):
    default_code = ErrorCode.RATE_LIMITED


class Unavailable(ServerError):
    default_code = ErrorCode.UNAVAILABLE


class Refusal(ServerError):
    """A rule turned the operation down (a group rule, a recall window, a send the commit refused).

    The storage layer raises it from inside its transactions, or returns it for one message of a batch; it
    reaches the client as it is, with the status of its code.
    """

    def __init__(self, code: ErrorCode | str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, code=ErrorCode(code), retry_after=retry_after)


_STORAGE_ERRORS = {
    "busy": (ErrorCode.STORAGE_BUSY, "the database is busy; retry with the same client_msg_id", 1.0),
    "full": (ErrorCode.STORAGE_FULL, "the database's disk is full; nothing was stored", 30.0),
    "unavailable": (ErrorCode.STORAGE_UNAVAILABLE, "the database cannot be reached; nothing was stored", 5.0),
}


def storage_error(kind: str) -> Unavailable:
    """The error a client is told for a storage fault of ``kind`` (see :mod:`im_server.storage.faults`)."""
    code, message, retry_after = _STORAGE_ERRORS.get(kind, _STORAGE_ERRORS["unavailable"])
    return Unavailable(message, code=code, retry_after=retry_after)
