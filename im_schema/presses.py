"""Quick-reply buttons on messages, the presses that come back to their sender, and bots' commands.

A text message may carry up to :data:`MAX_BUTTONS` buttons (``TextContent.buttons``). A member of the
conversation presses one with ``POST /v1/conversations/{c}/messages/{seq}/press``; the press is stored
for the message's sender (durably, until the sender acknowledges it or it lapses) and pushed to the
sender's online devices as a ``button_press`` notice. A sender that was away lists its pending presses
with ``GET /v1/presses`` and acknowledges each one it handled with ``POST /v1/presses/{id}/ack``.

An account declares its commands (``PUT /v1/me/commands``); anyone may list them
(``GET /v1/users/{user}/commands``), as clients do to complete ``/`` in a conversation with a bot.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .buttons import PRINTABLE, ButtonId
from .ids import ConversationId, Seq, UserId, UserRef
from .models import Timestamp
from .rest import Endpoint, Ok, Request

__all__ = [
    "MAX_COMMANDS",
    "AckPressRequest",
    "BotCommand",
    "CommandList",
    "CommandName",
    "CommandsRequest",
    "PendingPressesRequest",
    "Press",
    "PressList",
    "PressRequest",
    "SetCommandsRequest",
    "SetUserCommandsRequest",
]

MAX_COMMANDS = 50
"""Commands one account may declare."""
MAX_COMMAND_DESCRIPTION_LEN = 256
MAX_COMMAND_ARGS_LEN = 64
MAX_PENDING_PAGE = 500

CommandName = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9_][a-z0-9_-]*$")]
"""A command without its ``/``: 1 to 32 of ``a-z 0-9 _ -``, not starting with ``-``."""


class Press(BaseModel):
    """A button pressed by a member of the conversation, as its message's sender receives it."""

    model_config = ConfigDict(frozen=True)

    id: int
    """Increasing; acknowledge it with ``POST /v1/presses/{id}/ack`` once handled."""
    conversation: ConversationId
    seq: Seq
    """The message whose button was pressed."""
    button: ButtonId
    user_id: UserId
    """Who pressed it."""
    pressed_at: Timestamp


class PressList(BaseModel):
    """Presses of my messages' buttons that I have not acknowledged, oldest first."""

    presses: list[Press]
    has_more: bool


class PressRequest(Request[Press]):
    """Press a button of a message: members of its conversation only, on a message they can see that
    still carries the button (not recalled). The press goes to the message's sender; pressing the
    same button again while that press is unacknowledged answers the same press."""

    endpoint = Endpoint("POST", "/v1/conversations/{conversation}/messages/{seq}/press", Press)

    conversation: ConversationId
    seq: Seq
    button: ButtonId


class PendingPressesRequest(Request[PressList]):
    """The presses of my messages' buttons I have not acknowledged yet, oldest first."""

    endpoint = Endpoint("GET", "/v1/presses", PressList)

    after: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    """Only presses with a greater id."""
    limit: Annotated[int, Field(ge=1, le=MAX_PENDING_PAGE)] = 100


class AckPressRequest(Request[Ok]):
    """Acknowledge a press of my message's button: it is handled, and no longer listed. Acknowledging
    twice, or a press that lapsed, is harmless."""

    endpoint = Endpoint("POST", "/v1/presses/{press}/ack", Ok)

    press: Annotated[int, Field(ge=1, le=2**63 - 1)]


class BotCommand(BaseModel):
    """A command an account (a bot) answers, as shown to people typing ``/``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: CommandName
    description: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_COMMAND_DESCRIPTION_LEN, pattern=PRINTABLE)
    ]
    args: Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMAND_ARGS_LEN, pattern=PRINTABLE)] | None = (
        None
    )
    """A hint for the arguments, e.g. ``CITY`` or ``NdM``."""


class CommandList(BaseModel):
    """An account's declared commands, in the order it declared them."""

    user_id: UserId
    commands: list[BotCommand]


class SetCommandsRequest(Request[CommandList]):
    """Declare my commands (replacing the previous list; an empty list removes them)."""

    endpoint = Endpoint("PUT", "/v1/me/commands", CommandList)

    commands: Annotated[list[BotCommand], Field(max_length=MAX_COMMANDS)]

    @field_validator("commands")
    @classmethod
    def _unique(cls, commands: list[BotCommand]) -> list[BotCommand]:
        if len({command.name for command in commands}) != len(commands):
            raise ValueError("command names must be unique")
        return commands


class SetUserCommandsRequest(Request[CommandList]):
    """Declare a bot's commands as an admin (see :class:`SetCommandsRequest`)."""

    endpoint = Endpoint("PUT", "/v1/admin/bots/{bot}/commands", CommandList)

    bot: UserRef
    commands: Annotated[list[BotCommand], Field(max_length=MAX_COMMANDS)]

    @field_validator("commands")
    @classmethod
    def _unique(cls, commands: list[BotCommand]) -> list[BotCommand]:
        if len({command.name for command in commands}) != len(commands):
            raise ValueError("command names must be unique")
        return commands


class CommandsRequest(Request[CommandList]):
    """The commands a user (a bot) declared; any signed-in user may list them."""

    endpoint = Endpoint("GET", "/v1/users/{user}/commands", CommandList)

    user: UserRef
