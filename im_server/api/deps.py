"""Dependencies shared by the routes: the services, the caller, and schema validation.

A route names the service it uses (``groups: GroupsDep``); each comes from its ``get_*`` provider, so a test
swaps one service with ``app.dependency_overrides[get_groups] = lambda: stand_in``. The node itself
(``NodeDep``) is left to the few routes that need more than one service.

The providers are coroutines although none of them waits: FastAPI runs a plain ``def`` dependency in a
worker thread, three thread hops per request for a lookup (a fifth of the event loop's time under a
reconnect storm).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from ..errors import BadRequest, Unauthorized
from ..services.admin import AdminService
from ..services.auth import Principal
from ..services.devices import DeviceService
from ..services.files import FileService
from ..services.groups import GroupService
from ..services.lifecycle import LifecycleService
from ..services.messaging import MessagingService
from ..services.presses import PressService
from ..services.social import SocialService
from ..services.streams import StreamService
from ..services.sync import SyncService
from .node import ApiNode

__all__ = [
    "AdminDep",
    "DeviceDep",
    "FileDep",
    "GroupsDep",
    "LifecycleDep",
    "MessagingDep",
    "NodeDep",
    "PressesDep",
    "PrincipalDep",
    "SocialDep",
    "StreamsDep",
    "SyncDep",
    "get_admin",
    "get_devices",
    "get_files",
    "get_groups",
    "get_lifecycle",
    "get_messaging",
    "get_node",
    "get_presses",
    "get_social",
    "get_sync",
    "parse",
    "validation_details",
]

M = TypeVar("M", bound=BaseModel)


async def get_node(request: Request) -> ApiNode:
    """The node serving this request."""
    node: ApiNode = request.app.state.node
    return node


NodeDep = Annotated[ApiNode, Depends(get_node)]


async def get_admin(node: NodeDep) -> AdminService:
    """Cluster administration."""
    return node.admin


async def get_devices(node: NodeDep) -> DeviceService:
    """Device sessions."""
    return node.devices


async def get_files(node: NodeDep) -> FileService:
    """Uploads and downloads."""
    return node.files


async def get_groups(node: NodeDep) -> GroupService:
    """Group operations."""
    return node.groups


async def get_lifecycle(node: NodeDep) -> LifecycleService:
    """Recall, edit, read positions, typing and presence."""
    return node.lifecycle


async def get_messaging(node: NodeDep) -> MessagingService:
    """Sending messages."""
    return node.messaging


async def get_presses(node: NodeDep) -> PressService:
    """Button presses and declared commands."""
    return node.presses


async def get_social(node: NodeDep) -> SocialService:
    """Friends, requests, blocks and privacy."""
    return node.social


async def get_streams(node: NodeDep) -> StreamService:
    """Streaming messages."""
    return node.streams


async def get_sync(node: NodeDep) -> SyncService:
    """Conversations and history."""
    return node.sync


AdminDep = Annotated[AdminService, Depends(get_admin)]
DeviceDep = Annotated[DeviceService, Depends(get_devices)]
FileDep = Annotated[FileService, Depends(get_files)]
GroupsDep = Annotated[GroupService, Depends(get_groups)]
LifecycleDep = Annotated[LifecycleService, Depends(get_lifecycle)]
MessagingDep = Annotated[MessagingService, Depends(get_messaging)]
PressesDep = Annotated[PressService, Depends(get_presses)]
SocialDep = Annotated[SocialService, Depends(get_social)]
StreamsDep = Annotated[StreamService, Depends(get_streams)]
SyncDep = Annotated[SyncService, Depends(get_sync)]


async def get_principal(request: Request, node: NodeDep) -> Principal:
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
