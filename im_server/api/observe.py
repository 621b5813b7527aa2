"""What an API node records about each HTTP request: its id, its outcome in the metrics.

One ASGI middleware, outermost (so refusals by the entrance are seen too):

- **Request id**: the client's ``X-Request-ID`` when it is 1 to 128 characters of ``A-Z a-z 0-9 . _ : -``
  (anything else could forge or break log lines, and is replaced), else a generated one; set in
  :data:`im_server.logs.request_id` for every record written while the request is handled, and echoed
  in the response's ``X-Request-ID``.
- **Access log**: one DEBUG record per request (method, path, status, duration).
- **Metrics**: ``im_http_requests_total`` by status class, ``im_http_request_seconds``, and for each error
  envelope ``im_errors_total`` by its code (read from the body, at most 8 KiB of it; codes outside
  :class:`~im_schema.errors.ErrorCode` count as ``other``, so the label stays bounded).
"""

from __future__ import annotations

import logging
import random
import re
import time

import orjson
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from im_schema.errors import ErrorCode

from .. import logs
from ..cluster.metrics import Registry

__all__ = ["REQUEST_ID_HEADER", "RequestObserver", "valid_request_id"]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_CODES = frozenset(code.value for code in ErrorCode)
_MAX_ERROR_BODY = 8192
# Request ids only have to be distinct, not secret (a client may choose its own): a generator seeded from
# the system's randomness once, instead of a system call per request (``secrets`` cost 14 % of a cheap
# request's CPU).
_ids = random.Random()
_STATUS_CLASSES = {number: f"{number}xx" for number in range(1, 6)}


def valid_request_id(value: str | None) -> bool:
    """Whether a client's request id is kept (else a new one is made)."""
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


class RequestObserver:
    """ASGI middleware: request ids and request metrics (see the module docstring)."""

    def __init__(self, app: ASGIApp, node_id: str, metrics: Registry, errors: Counter) -> None:
        self.app = app
        self._node_id = node_id
        self._errors = errors
        self._requests = metrics.counter(
            "im_http_requests_total", "HTTP requests answered, by status class.", ["status"]
        )
        self._seconds = metrics.histogram("im_http_request_seconds", "From an HTTP request's arrival to its answer.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"), None)
        request = given if given is not None and valid_request_id(given) else f"{_ids.getrandbits(64):016x}"
        logs.node_id.set(self._node_id)
        logs.request_id.set(request)
        started = time.perf_counter()
        status = 0
        error_body: bytearray | None = None

        async def observed(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request.encode())]
                if status >= 400:
                    error_body = bytearray()
            elif message["type"] == "http.response.body" and error_body is not None:
                if len(error_body) < _MAX_ERROR_BODY:
                    error_body += message.get("body", b"")[: _MAX_ERROR_BODY - len(error_body)]
                if not message.get("more_body", False):
                    self._errors.labels(_error_code(bytes(error_body))).inc()
                    error_body = None
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            elapsed = time.perf_counter() - started
            self._seconds.observe(elapsed)
            self._requests.labels(_STATUS_CLASSES.get(status // 100, "none")).inc()
            # The access log, at DEBUG: with IM_LOG_FORMAT=json each line carries the request id.
            log.debug("%s %s %d %.1f ms", scope["method"], scope["path"], status, elapsed * 1000)


def _error_code(body: bytes) -> str:
    try:
        code = orjson.loads(body)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "other"
    return code if isinstance(code, str) and code in _CODES else "other"
