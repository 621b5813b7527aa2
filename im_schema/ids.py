"""Typed identifiers shared by the server, the SDK and the CLI.

Users and groups have integer ids. Devices are named by their owner. Conversations are strings:
``d:<uid>:<uid>`` for a one-to-one conversation (the smaller id first) and ``g:<gid>`` for a group.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, WithJsonSchema

__all__ = [
    "MAX_ID",
    "STORABLE_TEXT",
    "ClientMsgId",
    "ConversationId",
    "DeviceId",
    "GroupId",
    "RecordId",
    "Seq",
    "UserId",
    "UserRef",
    "Username",
    "conversation_kind",
    "direct_conversation",
    "direct_peer",
    "direct_users",
    "group_conversation",
    "group_of",
    "is_conversation_id",
]

MAX_ID = 2**63 - 1
"""The largest id, seq or counter the storage holds (a signed 64-bit integer, in SQLite and PostgreSQL)."""
_MAX_ID = MAX_ID

STORABLE_TEXT = r"^[^\x00]*$"
"""The pattern every free-text field of the schema matches: no NUL character.

PostgreSQL cannot store NUL in a text column (SQLite can), so the schema refuses it everywhere, and both
databases answer the same ``400 bad_request``. Lone surrogates, the other characters that UTF-8 cannot
carry, are already refused by the JSON parser (and by this pattern in Python).
"""

UserId = Annotated[int, Field(ge=1, le=_MAX_ID)]
"""A user's numeric id."""

GroupId = Annotated[int, Field(ge=1, le=_MAX_ID)]
"""A group's numeric id."""

Seq = Annotated[int, Field(ge=0, le=_MAX_ID)]
"""A position in one conversation; the first message has seq 1."""

RecordId = Annotated[int, Field(ge=1, le=_MAX_ID)]
"""The id of a stored record other than a user or group (a friend request, a join request)."""

_USERNAME_RE = r"^[a-z0-9][a-z0-9_.-]{2,31}$"


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


Username = Annotated[
    str,
    StringConstraints(pattern=_USERNAME_RE),
    BeforeValidator(_lower),  # runs first; listed last so that the JSON schema shows the pattern
]
"""3 to 32 characters from ``a-z 0-9 _ . -``, starting with a letter or digit; case-insensitive."""


def _ascii_digits_to_id(value: object) -> object:
    # ``str.isdigit`` is also true for "²" or "٣"; only ASCII digits name an id.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


_NAME_NOT_NUMBER = {"type": "string", "pattern": r"^(?=.*[a-z_.-])[a-z0-9][a-z0-9_.-]{2,31}$"}

UserRef = Annotated[
    UserId | Annotated[Username, WithJsonSchema(_NAME_NOT_NUMBER)], BeforeValidator(_ascii_digits_to_id)
]
"""A user named by id or by username, as in a URL path: a string of ASCII digits is an id (so a username
made only of digits can be named here by its id only)."""

DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
"""A device name chosen by its owner, e.g. ``laptop`` or ``bot-1``."""

ClientMsgId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
"""The sender's idempotency key for one message: resending it returns the stored message."""

_CONVERSATION_PATTERN = r"d:([1-9][0-9]{0,18}):([1-9][0-9]{0,18})|g:([1-9][0-9]{0,18})"
_CONVERSATION_RE = re.compile(_CONVERSATION_PATTERN)


def _check_conversation(value: str) -> str:
    match = _CONVERSATION_RE.fullmatch(value)
    if match is None:
        raise ValueError("a conversation id is 'd:<uid>:<uid>' or 'g:<gid>'")
    numbers = [int(part) for part in match.groups() if part is not None]
    if any(number > _MAX_ID for number in numbers):
        raise ValueError("an id in the conversation id is out of range")
    if match.group(1) is not None and not numbers[0] < numbers[1]:
        raise ValueError("a direct conversation names two different users, the smaller id first")
    return value


ConversationId = Annotated[
    str,
    StringConstraints(max_length=48, pattern=f"^({_CONVERSATION_PATTERN})$"),
    AfterValidator(_check_conversation),
]
"""``d:<uid>:<uid>`` (smaller id first) or ``g:<gid>``."""


def is_conversation_id(value: str) -> bool:
    """Tell whether ``value`` is a well-formed conversation id."""
    try:
        _check_conversation(value)
    except ValueError:
        return False
    return True


def direct_conversation(a: int, b: int) -> str:
    """The id of the one-to-one conversation between users ``a`` and ``b``."""
    if a == b:
        raise ValueError("a direct conversation needs two different users")
    low, high = (a, b) if a < b else (b, a)
    return f"d:{low}:{high}"


def group_conversation(group_id: int) -> str:
    """The id of a group's conversation."""
    return f"g:{group_id}"


def conversation_kind(conversation: str) -> Literal["direct", "group"]:
    """``direct`` or ``group``."""
    return "direct" if conversation.startswith("d:") else "group"


def direct_users(conversation: str) -> tuple[int, int]:
    """The two users of a direct conversation id."""
    _, a, b = conversation.split(":")
    return int(a), int(b)


def direct_peer(conversation: str, me: int) -> int:
    """The other user of a direct conversation."""
    a, b = direct_users(conversation)
    return b if a == me else a


def group_of(conversation: str) -> int:
    """The group id of a group conversation id."""
    return int(conversation[2:])
