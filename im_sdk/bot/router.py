"""Routers: handlers, filters, middleware and error hooks, nested with :meth:`Router.include_router`.

An event goes to the first handler that wants it, in registration order, a router's own handlers before
those of the routers it includes (depth first). A handler wants an event when its event types match
(``on_message``: user messages; ``on_event(T, ...)``: instances of ``T``) and every filter passes.

Middleware is ``async def middleware(handler, event, data)``; it calls ``await handler(event, data)``
(or not, to drop the event) and may add to ``data``. A router's middleware wraps the calls of its own
handlers and of every router it includes, outermost first.

A handler that raises does not stop anything: the exception goes to the error hooks
(``@router.on_error``, innermost router first; the first hook that returns without raising handles
it), else it is logged. Handlers take the event and, by name, any value of ``data`` (``bot``, ``me``,
and what filters and middleware added, e.g. ``command``, ``match``); a ``**kwargs`` parameter takes all.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..events import MessageEvent
from .filters import Filter

__all__ = ["ErrorHook", "Handler", "Middleware", "NextHandler", "Router"]

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]
"""``async def handler(event, **values_from_data)``."""
NextHandler = Callable[[Any, dict[str, Any]], Awaitable[Any]]
"""What a middleware calls to go on: ``await handler(event, data)``."""
Middleware = Callable[[NextHandler, Any, dict[str, Any]], Awaitable[Any]]
"""``async def middleware(handler, event, data)``."""
ErrorHook = Callable[[BaseException, Any, dict[str, Any]], Awaitable[Any]]
"""``async def on_error(error, event, data)``."""

H = TypeVar("H", bound=Handler)


def _require_coroutine(function: Callable[..., Any], what: str) -> None:
    # Checked when registering, so a forgotten ``async`` fails at import, not at the first event.
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"{what} must be a coroutine function (async def), got {function!r}")


@dataclass
class _Registered:
    handler: Handler
    types: tuple[type, ...]
    filters: tuple[Filter, ...]
    takes_all: bool
    names: frozenset[str]
    user_messages: bool

    async def wants(self, event: Any, data: dict[str, Any]) -> dict[str, Any] | None:
        if not isinstance(event, self.types):
            return None
        if self.user_messages and isinstance(event, MessageEvent) and event.message.content.kind == "system":
            return None
        found: dict[str, Any] = {}
        for item in self.filters:
            result = await item.check(event, {**data, **found})
            if not result:
                return None
            if isinstance(result, dict):
                found.update(result)
        return found

    async def call(self, event: Any, data: dict[str, Any]) -> Any:
        if self.takes_all:
            kwargs = {key: value for key, value in data.items() if key.isidentifier()}
        else:
            kwargs = {name: data[name] for name in self.names if name in data}
        return await self.handler(event, **kwargs)


class Router:
    """A set of handlers with their middleware and error hooks; routers nest."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"router-{id(self):x}"
        self.parent: Router | None = None
        self._handlers: list[_Registered] = []
        self._children: list[Router] = []
        self._middleware: list[Middleware] = []
        self._error_hooks: list[ErrorHook] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # Registration ---------------------------------------------------------------------------------

    def on_message(self, *filters: Filter | Callable[[Any], Any]) -> Callable[[H], H]:
        """Handle user messages (not system messages) that pass every filter::

        @router.on_message(Command("help"))
        async def help(msg: MessageEvent) -> None: ...
        """
        return self._register((MessageEvent,), filters, user_messages=True)

    def on_event(self, *types_and_filters: type | Filter | Callable[[Any], Any]) -> Callable[[H], H]:
        """Handle events of the given types (any event without types) that pass every filter::

        @router.on_event(FriendRequest)
        async def befriend(event: FriendRequest) -> None:
            await event.accept()
        """
        types = tuple(item for item in types_and_filters if isinstance(item, type))
        filters = tuple(item for item in types_and_filters if not isinstance(item, type))
        return self._register(types or (object,), filters, user_messages=False)

    def _register(
        self, types: tuple[type, ...], filters: tuple[Filter | Callable[[Any], Any], ...], *, user_messages: bool
    ) -> Callable[[H], H]:
        checked = tuple(Filter.of(item) for item in filters)

        def decorator(handler: H) -> H:
            _require_coroutine(handler, "a handler")
            parameters = list(inspect.signature(handler).parameters.values())
            takes_all = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)
            names = frozenset(
                parameter.name
                for parameter in parameters[1:]
                if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            )
            self._handlers.append(_Registered(handler, types, checked, takes_all, names, user_messages))
            return handler

        return decorator

    def middleware(self, middleware: Middleware) -> Middleware:
        """Add a middleware (usable as a decorator)."""
        _require_coroutine(middleware, "a middleware")
        self._middleware.append(middleware)
        return middleware

    def on_error(self, hook: ErrorHook) -> ErrorHook:
        """Add an error hook ``async (error, event, data)`` (usable as a decorator)."""
        _require_coroutine(hook, "an error hook")
        self._error_hooks.append(hook)
        return hook

    def include_router(self, router: Router) -> Router:
        """Nest ``router`` under this one (a router has one parent; cycles are refused)."""
        if router.parent is not None:
            raise ValueError(f"{router!r} is already included in {router.parent!r}")
        ancestor: Router | None = self
        while ancestor is not None:
            if ancestor is router:
                raise ValueError("a router cannot include itself or one of its ancestors")
            ancestor = ancestor.parent
        router.parent = self
        self._children.append(router)
        return router

    # Dispatch -------------------------------------------------------------------------------------

    async def _find(
        self, event: Any, data: dict[str, Any], path: tuple[Router, ...] = ()
    ) -> tuple[_Registered, dict[str, Any], tuple[Router, ...]] | None:
        path = (*path, self)
        for registered in self._handlers:
            found = await registered.wants(event, data)
            if found is not None:
                return registered, found, path
        for child in self._children:
            hit = await child._find(event, data, path)
            if hit is not None:
                return hit
        return None

    async def dispatch(self, event: Any, data: dict[str, Any]) -> bool:
        """Run the first handler that wants ``event``, through the middleware on its path; ``False`` if
        no handler wanted it. Exceptions of filters, middleware and handlers go to the error hooks."""
        path: tuple[Router, ...] = (self,)
        try:
            hit = await self._find(event, data)
            if hit is None:
                return False
            registered, found, path = hit
            data = {**data, **found}
            call: NextHandler = registered.call
            for router in reversed(path):
                for middleware in reversed(router._middleware):
                    call = _wrap(middleware, call)
            await call(event, data)
        except Exception as exc:
            await self._report(exc, event, data, path)
        return True

    async def _report(self, error: Exception, event: Any, data: dict[str, Any], path: tuple[Router, ...]) -> None:
        for router in reversed(path):
            for hook in router._error_hooks:
                try:
                    await hook(error, event, data)
                    return
                except Exception as hook_error:
                    if hook_error is not error:
                        log.exception("error hook %r failed", hook)
        log.error("handler failed on %r", event, exc_info=error)


def _wrap(middleware: Middleware, call: NextHandler) -> NextHandler:
    async def wrapped(event: Any, data: dict[str, Any]) -> Any:
        return await middleware(call, event, data)

    return wrapped
