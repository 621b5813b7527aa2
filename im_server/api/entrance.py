"""The door of an API node: who the client is, whether its address may come in, who may read metrics.

One ASGI middleware, outermost, so that a refused client costs no routing, no body and no database:

- the client address is the peer's, or the nearest untrusted hop of ``X-Forwarded-For`` when the peer
  is one of ``IM_TRUSTED_PROXIES``; routes read it from ``request.state.client_address``;
- an address the cluster's allow and deny lists refuse gets ``403 forbidden`` (``/healthz`` excepted, so
  that load balancers can still probe);
- ``/metrics`` answers only a request bearing ``IM_METRICS_TOKEN``; with no token set it is not served on
  this port at all (``IM_METRICS_PORT`` serves it on a separate listener).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import Forbidden, NotFound, ServerError, Unauthorized
from ..services.access import AccessRules, client_address, metrics_allowed, parse_network
from ..settings import Settings

__all__ = ["Entrance"]


def _response(exc: ServerError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=headers)


class Entrance:
    """ASGI middleware: client address, access lists, metrics token (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings, rules: Callable[[], AccessRules]) -> None:
        self.app = app
        self._rules = rules
        self._proxies = tuple(parse_network(item) for item in settings.trusted_proxies)
        self._metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = scope["client"][0] if scope.get("client") else None
        forwarded = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
        address = client_address(peer, forwarded, self._proxies)
        scope.setdefault("state", {})["client_address"] = address
        path = scope["path"]
        refusal: ServerError | None = None
        if path != "/healthz" and not self._rules().admits(address):
            refusal = Forbidden("your network address is not allowed on this server")
        elif path == "/metrics":
            authorization = next(
                (value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"), None
            )
            if self._metrics_token is None:
                refusal = NotFound("no such endpoint")
            elif not metrics_allowed(self._metrics_token, authorization):
                refusal = Unauthorized("the metrics token is missing or wrong")
        if refusal is not None:
            await _response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)
