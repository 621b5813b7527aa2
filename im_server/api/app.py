"""The FastAPI application of an API node (OpenAPI at ``/docs`` and ``/openapi.json``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from im_schema.errors import ErrorCode
from im_schema.files import FILES_PATH

from ..errors import BadRequest, NotFound, PayloadTooLarge, ServerError, storage_error
from ..storage.faults import classify
from .deps import validation_details
from .entrance import Entrance
from .node import ApiNode
from .observe import RequestObserver
from .routes import auth, conversations, gateway, groups, health, lifecycle, messages, social, users
from .routes.devices import router as devices_router
from .routes.files import router as files_router

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes, whether announced or streamed.

    ``POST`` to an ``exempt`` path (uploads) is left to its route, which applies limits of its own.
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
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _error_response(PayloadTooLarge(f"the body is larger than {self.limit} bytes"))(
                    scope, receive, send
                )
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(f"the body is larger than {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


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
    for module in (health, auth, users, social, groups, messages, lifecycle, conversations, gateway):
        app.include_router(module.router)
    app.include_router(files_router)
    app.include_router(devices_router)

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
    # Added last, so outermost: a refused address costs nothing further.
    app.add_middleware(Entrance, settings=node.settings, rules=lambda: node.access.rules)
    # Outside the entrance: its refusals get a request id and are counted too.
    app.add_middleware(RequestObserver, node_id=node.node_id, metrics=node.metrics, errors=node.errors)
    return app
