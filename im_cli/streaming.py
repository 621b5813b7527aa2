"""How ``im listen`` shows streaming messages (a bot's answer that grows while it is written).

Not on a terminal (a pipe, a file, a test), each streaming message is printed once, when it is final: its
opening is held back and the line comes with the closing :class:`~im_sdk.StreamEvent`. On a terminal the
line grows in place: the text so far, then each new piece as it comes, and the line ends when the stream
closes. If anything else must be printed meanwhile, the growing line ends there, and the message is printed
again, whole, once it is final.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from im_schema.content import TextContent
from im_schema.models import Message
from im_sdk import StreamEvent

__all__ = ["StreamPrinter", "final_message"]


def final_message(message: Message, event: StreamEvent) -> Message:
    """The message as a stream event says it is now."""
    state = event.state if event.state in ("open", "finished", "abandoned") else None
    return message.model_copy(update={"content": TextContent(text=event.text), "stream": state})


@dataclass
class _Live:
    key: tuple[str, int]
    shown: str


class StreamPrinter:
    """Decides what ``listen`` prints for streaming messages; ``line`` renders a whole message as markup."""

    def __init__(self, console: Console, line: Callable[[Message], str], *, live: bool | None = None) -> None:
        self._console = console
        self._line = line
        self._live_ok = console.is_terminal if live is None else live
        self._held: dict[tuple[str, int], Message] = {}
        self._live: _Live | None = None

    def message(self, message: Message) -> bool:
        """Take a message; ``False`` if it is not a growing one (the caller prints it as usual)."""
        if message.stream != "open" or not isinstance(message.content, TextContent):
            return False
        key = (message.conversation, message.seq)
        self._held[key] = message
        if self._live_ok:
            self.interrupt()
            self._console.print(self._line(message.model_copy(update={"stream": None})), end="")
            self._live = _Live(key, message.content.text)
        return True

    def event(self, event: StreamEvent, fetch: Callable[[str, int], Message | None]) -> None:
        """Take a stream event; ``fetch`` reads a message this printer never saw opened."""
        key = (event.conversation, event.seq)
        live = self._live
        if live is not None and live.key == key and event.text.startswith(live.shown):
            self._console.print(escape(event.text[len(live.shown) :]), end="")
            live.shown = event.text
            if event.done:
                self._console.print(" [dim](cut short)[/dim]" if event.state == "abandoned" else "")
                self._live = None
                self._held.pop(key, None)
            return
        if not event.done:
            return  # shown whole when it is final
        if live is not None and live.key == key:
            self.interrupt()  # rewritten, not grown: print it again, whole
        held = self._held.pop(key, None) or fetch(event.conversation, event.seq)
        if held is None:
            return
        self.interrupt()
        self._console.print(self._line(final_message(held, event)))

    def heal(self, fetch: Callable[[str, int], Message | None]) -> None:
        """After a reconnect: read the held messages again and print those that ended meanwhile (their
        closing notice went while we were away; notices are not replayed)."""
        for key in list(self._held):
            found = fetch(*key)
            if found is None or found.stream == "open":
                continue
            del self._held[key]
            self.interrupt()
            self._console.print(self._line(found))

    def interrupt(self) -> None:
        """End a growing line before something else is printed."""
        if self._live is not None:
            self._console.print()
            self._live = None
