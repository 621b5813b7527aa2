"""Routes declared once, by the request models of :mod:`im_schema`.

Each REST endpoint is written in exactly one place: its request model's :class:`~im_schema.rest.Endpoint`
(method, path, answer, success status). :func:`route` registers a handler there::

    @route(router, UpdateGroupRequest)
    async def update(request: UpdateGroupRequest, node: NodeDep, principal: PrincipalDep) -> Group:
        ...

and gives FastAPI a signature made from the model's fields: the fields named in the path become typed
path parameters, the others query parameters (``GET``, ``DELETE``) or one JSON body. The handler gets the
validated request model. So the OpenAPI document carries every pattern, bound and enum of the schema, and
a route cannot drift from the model the SDK sends.

In JSON bodies booleans and integers are strict: ``"true"`` is not a boolean and ``"1"`` or ``1.5`` not an
integer there (query and path values are text, and are converted as usual). Every operation documents the error
envelope for each error status it can answer.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationError, create_model
from pydantic.fields import FieldInfo

from im_schema.errors import ErrorEnvelope
from im_schema.rest import Request

from ..errors import BadRequest
from .deps import validation_details

__all__ = ["ERROR_RESPONSES", "ERROR_STATUSES", "body_model", "error_responses", "route"]

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])

ERROR_STATUSES: dict[int, str] = {
    400: "The request does not match the schema, or breaks a rule (`bad_request`, `text_too_long`, ...).",
    401: "No token, or a malformed, expired (`token_expired`) or revoked one; wrong credentials at login.",
    403: "Not allowed (`forbidden`, `not_a_member`, `muted`, `not_friends`, ...).",
    404: "No such user, conversation, group, request or message.",
    409: "In conflict with the current state (`username_taken`, `already_friends`, `too_many_devices`, ...).",
    413: "The body is larger than the server accepts (`payload_too_large`).",
    429: "Too many requests (`rate_limited`); `Retry-After` says when to try again.",
    500: "A bug in the server (`internal`); the request may be retried.",
    503: "A dependency of the server is down (`unavailable`); retry later.",
}
"""The error statuses every operation documents, each with the error envelope."""

ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    **{
        status: (name, ERROR_STATUSES[status])
        for status, name in (
            (400, "BadRequest"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "NotFound"),
            (409, "Conflict"),
            (413, "PayloadTooLarge"),
            (429, "RateLimited"),
            (500, "Internal"),
            (503, "Unavailable"),
        )
    },
    415: ("UnsupportedMediaType", "The bytes are not of an accepted type (`unsupported_media_type`, `refused_type`)."),
    416: ("RangeNotSatisfiable", "The range starts beyond the end of the file (`range_not_satisfiable`)."),
    422: ("CorruptMedia", "The bytes claim a format but cannot be read as one (`corrupt_media`)."),
}
"""Every error status an operation may document: its name in ``components/responses`` and its description."""

_QUERY_METHODS = frozenset({"GET", "DELETE"})
_bodies: dict[type[BaseModel], type[BaseModel] | None] = {}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of an operation: the common error statuses plus ``statuses``, with the envelope."""
    wanted = sorted({*ERROR_STATUSES, *statuses})
    return {status: {"model": ErrorEnvelope, "description": ERROR_RESPONSES[status][1]} for status in wanted}


def _typed(info: FieldInfo) -> Any:
    """The field's full type, constraints included."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _strict(annotation: Any) -> Any:
    """The same type with its booleans and integers strict (no ``"true"``, ``"1"`` or ``1.0``)."""
    if annotation is bool:
        return StrictBool
    if annotation is int:
        return StrictInt
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        return Annotated[(_strict(inner), *metadata)]
    if origin in (Union, UnionType):
        return Union[tuple(_strict(arg) for arg in get_args(annotation))]  # noqa: UP007
    if origin is list:
        return list[_strict(get_args(annotation)[0])]  # type: ignore[misc]
    return annotation


def body_model(model: type[Request[Any]]) -> type[BaseModel] | None:
    """The JSON body of a request model: its fields not in the path, read strictly (``None`` if none)."""
    if model in _bodies:
        return _bodies[model]
    path = set(model.endpoint.path_params)
    fields: dict[str, Any] = {
        name: (_strict(info.annotation), FieldInfo.merge_field_infos(info))
        for name, info in model.model_fields.items()
        if name not in path
    }
    body: type[BaseModel] | None = None
    if fields:
        name = model.__name__.removesuffix("Request") + "Body"
        config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=model.model_config.get("json_schema_extra"))
        body = create_model(name, __config__=config, __doc__=model.__doc__, __module__=model.__module__, **fields)
    _bodies[model] = body
    return body


def _parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _default(info: FieldInfo) -> Any:
    return inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)


def route(
    router: APIRouter, model: type[Request[Any]], *, query: bool = False, errors: tuple[int, ...] = (), **options: Any
) -> Callable[[H], H]:
    """Register the decorated handler at ``model.endpoint``; the handler takes the validated model.

    Args:
        router: Where to register.
        model: The request model of the endpoint; the handler has exactly one parameter of this type.
        query: Send the fields not in the path as query parameters whatever the method (for a body that
            is not JSON, such as an upload's bytes).
        errors: Error statuses this operation answers beyond :data:`ERROR_STATUSES`.
        **options: More keyword arguments for :meth:`APIRouter.add_api_route` (``openapi_extra``, ...).
    """
    endpoint = model.endpoint

    def decorate(handler: H) -> H:
        hints = get_type_hints(handler, include_extras=True)
        parameters = list(inspect.signature(handler).parameters.values())
        target = [parameter.name for parameter in parameters if hints.get(parameter.name) is model]
        if len(target) != 1:
            raise TypeError(f"{handler.__qualname__} must take exactly one {model.__name__} parameter")
        model_arg = target[0]
        fields = model.model_fields
        derived: list[inspect.Parameter] = []
        for name in endpoint.path_params:
            derived.append(_parameter(name, Annotated[_typed(fields[name]), Path()]))
        in_query: list[str] = []
        body: type[BaseModel] | None = None
        if query or endpoint.method in _QUERY_METHODS:
            for name, info in fields.items():
                if name in endpoint.path_params:
                    continue
                in_query.append(name)
                derived.append(_parameter(name, Annotated[_typed(info), Query()], _default(info)))
        else:
            body = body_model(model)
            if body is not None:
                optional = all(not info.is_required() for info in body.model_fields.values())
                derived.append(
                    _parameter("body", Annotated[body, Body()], None if optional else inspect.Parameter.empty)
                )
        extra: dict[str, Any] = options.pop("openapi_extra", None) or {}
        kept = [
            parameter.replace(annotation=hints.get(parameter.name, parameter.annotation), kind=parameter.KEYWORD_ONLY)
            for parameter in parameters
            if parameter.name != model_arg
        ]

        async def call(**arguments: Any) -> Any:
            values: dict[str, Any] = {name: arguments.pop(name) for name in endpoint.path_params}
            for name in in_query:
                value = arguments.pop(name)
                if value is not None:
                    values[name] = value
            if body is not None:
                given = arguments.pop("body", None)
                if given is not None:
                    values.update({name: getattr(given, name) for name in given.model_fields_set})
            try:
                request = model.model_validate(values)
            except ValidationError as exc:
                raise BadRequest("the request does not match the schema", details=validation_details(exc)) from None
            return await handler(**{model_arg: request}, **arguments)

        clash = {parameter.name for parameter in derived} & {parameter.name for parameter in kept}
        if clash:
            raise TypeError(f"{handler.__qualname__}: parameters {sorted(clash)} clash with {model.__name__}'s fields")
        call.__signature__ = inspect.Signature([*derived, *kept])  # type: ignore[attr-defined]
        call.__name__ = handler.__name__
        call.__qualname__ = handler.__qualname__
        call.__doc__ = handler.__doc__
        router.add_api_route(
            endpoint.path,
            call,
            methods=[endpoint.method],
            response_model=endpoint.response,
            status_code=endpoint.status,
            responses=error_responses(*errors),
            name=handler.__name__,
            operation_id=model.__name__.removesuffix("Request"),
            summary=(model.__doc__ or handler.__name__).strip().splitlines()[0].rstrip("."),
            openapi_extra={**({"security": [{"bearer": []}]} if endpoint.auth else {}), **extra} or None,
            **options,
        )
        return handler

    return decorate
