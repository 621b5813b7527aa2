"""The I/O-free half of both clients: building requests and reading responses.

Each call is a request model from :mod:`im_schema.rest` that names its endpoint and response model;
:func:`prepare` turns it into HTTP parts and :func:`parse` turns the answer into the response model or
the right :class:`~im_sdk.errors.APIError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from im_schema.buttons import Button
from im_schema.content import TextContent
from im_schema.errors import ErrorEnvelope
from im_schema.files import UploadRequest
from im_schema.ids import is_conversation_id
from im_schema.lifecycle import TypingRequest
from im_schema.presses import AckPressRequest, PressRequest
from im_schema.rest import MarkReadRequest, Request, SendMessageRequest

from .errors import APIError, InternalServerError, error_for

__all__ = [
    "Prepared",
    "as_buttons",
    "error_from",
    "is_idempotent",
    "new_client_msg_id",
    "parse",
    "prepare",
    "retry_after_seconds",
    "send_text_request",
]

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Prepared:
    """An HTTP request, ready for either transport."""

    method: str
    path: str
    params: dict[str, Any] | None
    json: dict[str, Any] | None
    auth: bool


def prepare(request: Request[R]) -> Prepared:
    """HTTP parts of a request model: path parameters are URL-quoted; GET fields go to the query."""
    endpoint = request.endpoint
    values = {name: quote(str(getattr(request, name)), safe=":") for name in endpoint.path_params}
    path = endpoint.path.format(**values)
    payload = request.payload()
    if endpoint.method in ("GET", "DELETE"):
        return Prepared(endpoint.method, path, payload or None, None, endpoint.auth)
    return Prepared(endpoint.method, path, None, payload, endpoint.auth)


_REPEATABLE = (SendMessageRequest, MarkReadRequest, TypingRequest, UploadRequest, PressRequest, AckPressRequest)
"""POSTs that a repeat cannot harm: a send carries its idempotency key, a read position only moves
forward, typing is a hint, identical uploads are stored once, a press repeated while pending is the
same press, and acknowledging twice is harmless."""


def is_idempotent(request: Request[Any]) -> bool:
    """Whether sending ``request`` twice has the effect of sending it once (so it may be retried after an
    error that leaves its fate unknown): ``GET``, ``PUT`` and ``PATCH`` (which set values), and the POSTs
    in :data:`_REPEATABLE`. ``DELETE`` is left out: a repeat of one that worked answers ``404``."""
    return request.endpoint.method in ("GET", "PUT", "PATCH") or isinstance(request, _REPEATABLE)


def parse(request: Request[R], status: int, content: bytes, headers: Any = None) -> R:
    """The response model of a successful answer; raises the matching :class:`APIError` otherwise."""
    if 200 <= status < 300:
        try:
            return cast(R, request.endpoint.response.model_validate_json(content))
        except ValidationError as exc:
            raise InternalServerError("bad_response", f"unexpected response body: {exc}", status=status) from None
    raise error_from(status, content, headers)


def error_from(status: int, content: bytes, headers: Any = None) -> APIError:
    """The exception for an error response."""
    header_delay = retry_after_seconds(headers.get("retry-after") if headers is not None else None)
    try:
        body = ErrorEnvelope.model_validate_json(content).error
    except ValidationError:
        # Not our envelope: a proxy or load balancer answered.
        text = content[:200].decode(errors="replace") or f"HTTP {status}"
        return error_for(f"http_{status}", text, status=status, retry_after=header_delay)
    retry_after = body.retry_after if body.retry_after is not None else header_delay
    return error_for(body.code, body.message, status=status, retry_after=retry_after, details=body.details)


def retry_after_seconds(header: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date; ``None`` if absent
    or unreadable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def new_client_msg_id() -> str:
    """A fresh idempotency key for one message."""
    return uuid.uuid4().hex


def as_buttons(buttons: Sequence[Button | tuple[str, str]] | None) -> tuple[Button, ...] | None:
    """Buttons given as models or ``(id, label)`` pairs (``None`` or empty: no buttons)."""
    if not buttons:
        return None
    return tuple(item if isinstance(item, Button) else Button(id=item[0], label=item[1]) for item in buttons)


def send_text_request(
    to: int | str,
    text: str,
    client_msg_id: str | None,
    *,
    reply_to: int | None = None,
    mentions: list[int] | None = None,
    mention_all: bool = False,
    buttons: Sequence[Button | tuple[str, str]] | None = None,
) -> SendMessageRequest:
    """``to`` is a user id, a username, or a conversation id (``d:1:2``, ``g:7``); ``buttons`` are
    :class:`~im_schema.buttons.Button` or ``(id, label)`` pairs."""
    content = TextContent(text=text, buttons=as_buttons(buttons))
    key = client_msg_id or new_client_msg_id()
    extras = {"reply_to": reply_to, "mentions": mentions or [], "mention_all": mention_all}
    if isinstance(to, str) and is_conversation_id(to):
        return SendMessageRequest(conversation=to, client_msg_id=key, content=content, **extras)
    return SendMessageRequest(to=to, client_msg_id=key, content=content, **extras)
