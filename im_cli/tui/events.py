"""What the SDK's event stream becomes inside ``im chat``: Textual messages posted to the app.

The listening worker turns every :mod:`im_sdk.events` event into one of these and posts it; handlers
on :class:`~im_cli.tui.app.ChatApp` update the widgets. Connection state changes (from the SDK's
reconnect log and each new connection's first listing) arrive as :class:`ConnectionChanged`.
"""

from __future__ import annotations

from textual.message import Message as TextualMessage

from im_schema.events import Notice
from im_schema.models import Message

__all__ = [
    "ConnectionChanged",
    "Edited",
    "Incoming",
    "NoticeArrived",
    "PresenceChanged",
    "Read",
    "Recalled",
    "StreamGrew",
    "Typing",
]


class Incoming(TextualMessage):
    """A message delivered live (or caught up after a reconnect)."""

    def __init__(self, message: Message) -> None:
        super().__init__()
        self.message = message


class Recalled(TextualMessage):
    """A message was recalled."""

    def __init__(self, conversation: str, seq: int, by: int, marker: Message) -> None:
        super().__init__()
        self.conversation, self.seq, self.by, self.marker = conversation, seq, by, marker


class Edited(TextualMessage):
    """A message's text was replaced."""

    def __init__(self, conversation: str, seq: int, text: str, marker: Message) -> None:
        super().__init__()
        self.conversation, self.seq, self.text, self.marker = conversation, seq, text, marker


class StreamGrew(TextualMessage):
    """A streaming message grew, or was closed: ``text`` is its whole text so far."""

    def __init__(self, conversation: str, seq: int, text: str, state: str) -> None:
        super().__init__()
        self.conversation, self.seq, self.text, self.state = conversation, seq, text, state


class Read(TextualMessage):
    """Someone (or another device of mine) read a conversation up to ``read_seq``."""

    def __init__(self, conversation: str, user_id: int, read_seq: int) -> None:
        super().__init__()
        self.conversation, self.user_id, self.read_seq = conversation, user_id, read_seq


class Typing(TextualMessage):
    """Someone started or stopped typing."""

    def __init__(self, conversation: str, user_id: int, active: bool) -> None:
        super().__init__()
        self.conversation, self.user_id, self.active = conversation, user_id, active


class PresenceChanged(TextualMessage):
    """A friend or group member came online or went offline."""

    def __init__(self, user_id: int, online: bool) -> None:
        super().__init__()
        self.user_id, self.online = user_id, online


class NoticeArrived(TextualMessage):
    """A friend request, a new friend, a join request, a group invitation..."""

    def __init__(self, notice: Notice) -> None:
        super().__init__()
        self.notice = notice


class ConnectionChanged(TextualMessage):
    """The realtime connection is ``connected`` or ``reconnecting`` (with the reason)."""

    def __init__(self, state: str, reason: str = "") -> None:
        super().__init__()
        self.state, self.reason = state, reason
