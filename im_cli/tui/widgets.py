"""The widgets of ``im chat``: the conversation list, the message pane and its messages, the side panel.

Messages are rendered as :class:`rich.text.Text` built from plain strings (never markup), with control
characters shown as symbols (:func:`~im_cli.output.printable_text`), so nothing a user writes can style
or break the screen, or reach the terminal as an escape sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message as TextualMessage
from textual.widgets import Label, ListItem, Static

from im_schema.content import RecalledContent, SystemContent, TextContent
from im_schema.models import Message

from ..output import printable_text, when
from ..render import NameOf, body, mentions_text, reply_text

__all__ = ["ChatView", "ConversationItem", "ConversationRow", "MessageItem", "message_text"]


@dataclass
class ConversationRow:
    """What the list shows of one conversation."""

    id: str
    title: str
    unread: int = 0
    mentioned: bool = False
    online: bool | None = None
    """For a direct conversation: whether the peer is online (``None``: unknown)."""
    peer: int | None = None
    max_seq: int = 0
    peer_read_seq: int = 0

    def label(self) -> Text:
        text = Text()
        if self.online is not None:
            text.append("● " if self.online else "○ ", style="green" if self.online else "dim")
        text.append(self.title, style="bold" if self.unread else "")
        if self.unread:
            text.append(f" {self.unread}", style="reverse")
        if self.mentioned:
            text.append(" @", style="bold red")
        return printable_text(text)


class ConversationItem(ListItem):
    """One row of the conversation list."""

    def __init__(self, row: ConversationRow) -> None:
        # No DOM id: a row being removed (the list reloads) and its successor may briefly coexist, and a
        # clash of ids would end the app; rows are found by their ``row.id``.
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        yield Label(self.row.label())

    def refresh_label(self) -> None:
        for label in self.query(Label):  # none before it is mounted: compose() shows the row then
            label.update(self.row.label())


def message_text(message: Message, name_of: NameOf, me: int, peer_read_seq: int | None) -> Text:
    """One message: time, sender, reply, body, mentions, (edited), and ✓/✓✓ on mine in a direct chat."""
    text = Text()
    text.append(f"{when(message.sent_at)} ", style="dim")
    text.append(f"#{message.seq} ", style="dim")
    system = isinstance(message.content, (SystemContent, RecalledContent))
    text.append(name_of(message.sender), style="bold green" if message.sender == me else "bold")
    text.append(" " if system else ": ")
    reply = reply_text(message, name_of)
    if reply:
        text.append(reply + "\n    ", style="cyan")
    said = body(message, name_of)
    text.append(said, style="italic dim" if system else "")
    mentions = mentions_text(message, name_of)
    if mentions and all(name in said for name in mentions.split()):
        mentions = None  # the text names them already
    if mentions:
        mine = message.mention_all or me in message.mentions
        text.append(" " + mentions, style="bold red" if mine else "cyan")
    if message.edited_at is not None:
        text.append(" (edited)", style="dim")
    if message.sender == me and peer_read_seq is not None and not system:
        text.append(" ✓✓" if message.seq <= peer_read_seq else " ✓", style="blue")
    content = message.content
    if isinstance(content, TextContent) and content.buttons:
        text.append("\n    ")
        for number, button in enumerate(content.buttons, 1):
            # Clicking one presses it (as ``/press SEQ N`` does); ids are plain ASCII, safe to quote.
            click = Style(reverse=True, meta={"@click": f"app.press_button({message.seq}, {button.id!r})"})
            text.append(f"[{number}] {button.label}", style=click)
            text.append("  ")
    return printable_text(text)


class MessageItem(Static):
    """One message in the pane (replaced in place when it is edited or recalled)."""

    def __init__(self, message: Message, rendered: Text) -> None:
        super().__init__(rendered, id=f"m-{message.seq}", classes="message")
        self.message = message


class ChatView(VerticalScroll):
    """The message pane: anchored to the newest message; scrolling to the top asks for older ones."""

    class NeedOlder(TextualMessage):
        """The pane was scrolled to its top."""

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value:
            self.post_message(self.NeedOlder())

    def items(self) -> list[MessageItem]:
        return list(self.query(MessageItem))
