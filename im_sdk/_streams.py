"""Writing a streaming message: the text grows while it is written (a language model's answer, say).

``im_sdk/_sync_streams.py`` is generated from this module by ``tools/unasync.py``.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING

from im_schema.content import TextContent, is_blank
from im_schema.models import Message

if TYPE_CHECKING:
    from ._async_client import AsyncClient

__all__ = ["AsyncMessageStream"]

log = logging.getLogger(__name__)


class AsyncMessageStream:
    """A streaming message being written; made by :meth:`AsyncClient.stream`.

    ::

        async with client.stream("g:7") as stream:
            async for piece in answer:
                await stream.append(piece)

    The message is opened (stored, with its seq, and shown to the others) at the first :meth:`append` that
    makes the text show something (a message is never blank: leading whitespace waits for it, see
    :func:`~im_schema.content.is_blank`), or at once by :meth:`open`. Appended text is sent at most
    once per ``interval`` seconds (what arrives in between waits for the next append, or the finish).
    Leaving the block finishes the message; leaving it by an exception marks it abandoned, with the text
    written so far. A stream never opened (nothing but blanks was appended) stores nothing.

    The open carries ``client_msg_id``: opening again with the same id (a restarted bot handling the same
    message) returns the stored message; if that one is closed already, :attr:`done` is true at once and
    appends are ignored; if it is still open, the new text replaces it.
    """

    def __init__(
        self,
        client: AsyncClient,
        to: int | str,
        *,
        client_msg_id: str | None = None,
        reply_to: int | None = None,
        mentions: list[int] | None = None,
        mention_all: bool = False,
        interval: float = 0.2,
    ) -> None:
        self._client = client
        self._to = to
        self._client_msg_id = client_msg_id
        self._reply_to = reply_to
        self._mentions = mentions
        self._mention_all = mention_all
        self._interval = interval
        self._text = ""
        self._sent = 0
        """How much of the text the server has (the offset of the next write)."""
        self._last = 0.0
        self.message: Message | None = None
        """The message as last answered by the server (``None`` until opened)."""
        self.done = False
        """The message was closed (by :meth:`finish`, :meth:`abandon`, or before a restart)."""

    @property
    def text(self) -> str:
        """The text appended so far (some of it perhaps not sent yet)."""
        return self._text

    async def open(self, text: str) -> Message:
        """Open the message with ``text`` now (called by the first :meth:`append` if not called before);
        ``text`` must not be blank."""
        if self.message is not None:
            raise RuntimeError("the stream is open already")
        message = await self._client.open_stream(
            self._to,
            text,
            client_msg_id=self._client_msg_id,
            reply_to=self._reply_to,
            mentions=self._mentions,
            mention_all=self._mention_all,
        )
        self.message = message
        self._text = text
        self._last = time.monotonic()
        stored = message.content.text if isinstance(message.content, TextContent) else ""
        if message.stream != "open":
            self.done = True  # closed before (a repeat after a restart): nothing more to write
            self._text = stored
            self._sent = len(stored)
        else:
            self._sent = len(text) if stored == text else 0  # a restarted writer rewrites the whole text
        return message

    async def append(self, text: str) -> None:
        """Add text; it reaches the server now if ``interval`` has passed since the last write, else later."""
        if self.done or not text:
            return
        if self.message is None:
            if is_blank(self._text + text):
                self._text += text  # a language model's first pieces are often a line break or a space
                return
            await self.open(self._text + text)
            return
        self._text += text
        if time.monotonic() - self._last >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        """Send what was appended and not sent yet."""
        if self.message is None or self.done or self._sent == len(self._text):
            return
        message = self.message
        await self._client.append_stream(message.conversation, message.seq, self._sent, self._text[self._sent :])
        self._sent = len(self._text)
        self._last = time.monotonic()

    async def finish(self) -> Message | None:
        """Send the rest and close the message; returns it (``None`` if it was never opened)."""
        return await self._close(abandon=False)

    async def abandon(self) -> Message | None:
        """Close the message as cut short, keeping the text sent so far and the rest appended."""
        return await self._close(abandon=True)

    async def _close(self, *, abandon: bool) -> Message | None:
        if self.message is None or self.done:
            return self.message
        message = self.message
        rest = self._text[self._sent :]
        final = await self._client.finish_stream(
            message.conversation,
            message.seq,
            offset=self._sent if rest else None,
            text=rest or None,
            abandon=abandon,
        )
        self.message = final
        self._sent = len(self._text)
        self.done = True
        return final

    async def __aenter__(self) -> AsyncMessageStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.finish()
            return
        try:
            await self.abandon()
        except Exception as error:  # the original exception matters more; the server's sweep closes it
            log.warning("could not mark the stream abandoned: %s", error)
