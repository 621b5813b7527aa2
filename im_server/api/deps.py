"""Dependencies shared by the routes: the node, the caller, and schema validation."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from ..errors import BadRequest, Unauthorized
from ..services.auth import Principal
from .node import ApiNode

__all__ = ["NodeDep", "PrincipalDep", "parse", "validation_details"]

M = TypeVar("M", bound=BaseModel)


def get_node(request: Request) -> ApiNode:
    """The node serving this request."""
    node: ApiNode = request.app.state.node
    return node


NodeDep = Annotated[ApiNode, Depends(get_node)]


def get_principal(request: Request, node: NodeDep) -> Principal:
    """The caller named by the bearer token."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send 'Authorization: Bearer <access token>'")
    return node.auth.authenticate(token.strip())


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def validation_details(exc: ValidationError | Any) -> list[dict[str, Any]]:
    """Validation errors without the offending input (which may be huge or secret)."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": error.get("msg", ""),
            "type": error.get("type"),
        }
        for error in exc.errors()
    ][:20]


def parse(model: type[M], /, **values: Any) -> M:
    """Validate path and query values with a shared request model."""
    try:
        return model.model_validate({key: value for key, value in values.items() if value is not None})
    except ValidationError as exc:
        raise BadRequest("the request does not match the schema", details=validation_details(exc)) from None
