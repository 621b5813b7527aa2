"""The FastAPI application of an API node (OpenAPI at ``/docs`` and ``/openapi.json``).

The OpenAPI document is the contract for fuzzers and client generators: its operations come from the
request models of :mod:`im_schema` (see :mod:`.contract`), every error status carries the error envelope,
and ``bearer`` is the security scheme of every authenticated operation. ``tests/openapi.json`` is its
snapshot.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from im_schema.errors import ErrorCode
from im_schema.files import FILES_PATH
from im_schema.ids import MAX_ID

from ..errors import BadRequest, NotFound, PayloadTooLarge, ServerError, storage_error
from ..storage.faults import classify
from .contract import ERROR_RESPONSES
from .deps import validation_details
from .entrance import Entrance
from .node import ApiNode
from .observe import RequestObserver
from .routes import (
    admin,
    auth,
    conversations,
    gateway,
    groups,
    health,
    lifecycle,
    messages,
    presses,
    social,
    streams,
    users,
)
from .routes.devices import router as devices_router
from .routes.files import router as files_router

__all__ = ["BodyLimit", "create_app"]

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with ``413 payload_too_large``, whether announced or streamed.

    A body announced by ``Content-Length`` is judged before it is read. A body without one (chunked) is
    read here, up to the limit, before the application sees it: past the limit the answer is the same
    413, not whatever error the application would make of a body cut short. ``POST`` to an ``exempt``
    path (uploads) is left to its route, which applies limits of its own.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] == "POST" and scope["path"] in self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The server already refused a malformed Content-Length, and holds the body to it.
                if value.isdigit() and int(value) > self.limit:
                    await self._too_large(scope, receive, send)
                    return
                await self.app(scope, receive, send)
                return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Built only when needed: a response object made for every request cost 4% of the event loop.
        answer = _error_response(PayloadTooLarge(f"the body is larger than {self.limit} bytes"))
        await answer(scope, receive, send)


def _error_response(exc: ServerError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    if exc.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=headers)


def create_app(node: ApiNode) -> FastAPI:
    """The application for a started :class:`ApiNode`."""
    app = FastAPI(
        title="IM API",
        version="1",
        summary="Accounts, messages, conversations and sync of the IM cluster.",
    )
    app.state.node = node
    for module in (health, auth, users, social, groups, messages, streams, lifecycle, presses, conversations, gateway):
        app.include_router(module.router)
    app.include_router(files_router)
    app.include_router(devices_router)
    app.include_router(admin.router)

    @app.exception_handler(ServerError)
    async def _server_error(_: Request, exc: ServerError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = any(error.get("type") == "json_invalid" for error in exc.errors())
        message = "the body is not valid JSON" if malformed else "the request does not match the schema"
        return _error_response(BadRequest(message, details=validation_details(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error_response(NotFound("no such endpoint"))
        error = ServerError(str(exc.detail), code=ErrorCode.BAD_REQUEST)
        return JSONResponse(error.envelope(), status_code=exc.status_code)

    def _storage_fault(request: Request, exc: Exception) -> JSONResponse | None:
        fault = classify(exc, node.db.health.database_path)
        if fault is None:
            return None
        # Counted and logged where it happened (Database.health); the client gets a code it can act on.
        log.warning("storage %s on %s %s: %s", fault.kind, request.method, request.url.path, fault.detail)
        return _error_response(storage_error(fault.kind))

    def _internal(request: Request) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body: dict[str, Any] = {"error": {"code": ErrorCode.INTERNAL.value, "message": "internal error"}}
        return JSONResponse(body, status_code=500)

    # Database errors get a handler of their own: Starlette answers a plain ``Exception`` handler from its
    # outermost middleware and then re-raises, so the server drops the connection after the answer.
    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        return _storage_fault(request, exc) or _internal(request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _storage_fault(request, exc) or _internal(request)

    app.add_middleware(BodyLimit, limit=node.settings.max_body_bytes, exempt=(FILES_PATH,))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _contract(
                get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customize the document
    # Added last, so outermost: a refused address costs nothing further.
    app.add_middleware(Entrance, settings=node.settings, rules=lambda: node.access.rules)
    # Outside the entrance: its refusals get a request id and are counted too.
    app.add_middleware(RequestObserver, node_id=node.node_id, metrics=node.metrics, errors=node.errors)
    return app


def _contract(document: dict[str, Any]) -> dict[str, Any]:
    """The generated document, made exact: no validation ``422`` (this API answers ``400`` with the envelope),
    each error response written once under ``components/responses``, and the ``bearer`` security scheme."""
    shared: dict[str, Any] = {}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            for status, response in responses.items():
                named = ERROR_RESPONSES.get(int(status)) if status.isdigit() else None
                if named is not None and response.get("description") == named[1]:
                    shared[named[0]] = response
                    responses[status] = {"$ref": f"#/components/responses/{named[0]}"}
    document.setdefault("components", {})["responses"] = dict(sorted(shared.items()))
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _integral_bounds(document)
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "The access token of `POST /v1/auth/login`."}
    }
    return document


_BOUNDS = frozenset({"maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum"})


def _integral_bounds(node: Any) -> None:
    # FastAPI's OpenAPI model holds bounds as floats: 2**63 - 1 would read as 2**63, which storage cannot hold.
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = MAX_ID if value == float(MAX_ID) else int(value)
            else:
                _integral_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _integral_bounds(item)
