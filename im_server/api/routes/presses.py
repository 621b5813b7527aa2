"""Quick-reply buttons (press, list and acknowledge presses) and declared commands."""

from __future__ import annotations

from fastapi import APIRouter

from im_schema.presses import (
    AckPressRequest,
    CommandList,
    CommandsRequest,
    PendingPressesRequest,
    Press,
    PressList,
    PressRequest,
    SetCommandsRequest,
    SetUserCommandsRequest,
)
from im_schema.rest import Ok

from ..contract import route
from ..deps import AdminDep, PressesDep, PrincipalDep

__all__ = ["router"]

router = APIRouter(tags=["buttons"])


@route(router, PressRequest)
async def press(request: PressRequest, presses: PressesDep, principal: PrincipalDep) -> Press:
    """Press a button of a message; the press goes to the message's sender."""
    return await presses.press(principal.user_id, request.conversation, request.seq, request.button)


@route(router, PendingPressesRequest)
async def pending_presses(request: PendingPressesRequest, presses: PressesDep, principal: PrincipalDep) -> PressList:
    """The presses of my messages' buttons that I have not acknowledged, oldest first."""
    return await presses.pending(principal.user_id, after=request.after, limit=request.limit)


@route(router, AckPressRequest)
async def acknowledge_press(request: AckPressRequest, presses: PressesDep, principal: PrincipalDep) -> Ok:
    """A press of mine is handled: it is no longer listed."""
    await presses.acknowledge(principal.user_id, request.press)
    return Ok()


@route(router, SetCommandsRequest)
async def set_commands(request: SetCommandsRequest, presses: PressesDep, principal: PrincipalDep) -> CommandList:
    """Declare my commands (replacing those declared before)."""
    return await presses.set_commands(principal.user_id, request.commands)


@route(router, SetUserCommandsRequest)
async def set_bot_commands(
    request: SetUserCommandsRequest, presses: PressesDep, admin: AdminDep, principal: PrincipalDep
) -> CommandList:
    """Declare a bot's commands (admins only)."""
    bot = await admin.show(principal, request.bot)  # admins only
    presses.require_bot(bot.is_bot)
    return await presses.set_commands(bot.id, request.commands)


@route(router, CommandsRequest)
async def commands(request: CommandsRequest, presses: PressesDep, principal: PrincipalDep) -> CommandList:
    """The commands a user (usually a bot) declared."""
    return await presses.commands(request.user)
