"""Storage: the source of truth for users, conversations and messages.

Only this package runs SQL. Every transaction is a named method of a store that returns schema models
or frozen dataclasses, never rows.
"""

from __future__ import annotations

from .conversations import MemberState
from .engine import Database
from .message_rows import Written
from .messages import MessageStore, NewMessage
from .users import Credentials, DeviceSession, UsernameTaken, UserStore

__all__ = [
    "Credentials",
    "Database",
    "DeviceSession",
    "MemberState",
    "MessageStore",
    "NewMessage",
    "UserStore",
    "UsernameTaken",
    "Written",
]
