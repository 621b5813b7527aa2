"""What part of a :class:`~im_sdk.realtime.protocol.SyncEngine`'s state may be saved, without I/O.

The engine's watermarks move when it hands messages to the client's shell, but the shell yields them
to the application one at a time, later. A saved watermark must never pass a message the application
was not given, or a restarted client would skip it. The :class:`Checkpoint` is told which messages the
shell is about to yield (:meth:`Checkpoint.handed`) and which it has yielded
(:meth:`Checkpoint.yielded`); :meth:`Checkpoint.changes` gives the state that is safe to save:

- each conversation's watermark, lowered below its first message handed but not yet yielded;
- the engine's ``since`` cursor only while nothing is waiting to be yielded (the cursor promises that
  every conversation it covers was delivered), else the last cursor that was safe.

Saves are due in batches (:attr:`Checkpoint.due`): when the shell has yielded everything it was handed
(the end of a burst), or after ``every`` yields during a long one. So a crash re-yields at most the last
``every`` events after a restart, and never skips one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from im_schema.models import Message

from .protocol import SyncEngine

__all__ = ["Checkpoint", "Cursors"]


@dataclass(frozen=True, slots=True)
class Cursors:
    """Sync state to save, or saved: the conversations cursor and per-conversation watermarks."""

    since: str | None = None
    watermarks: dict[str, int] = field(default_factory=dict)


class Checkpoint:
    """Tracks the messages between the engine and the application; see the module docstring."""

    def __init__(self, engine: SyncEngine, saved: Cursors | None = None, *, every: int = 32) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self._engine = engine
        self._every = every
        self._pending: dict[str, deque[int]] = {}
        self._waiting = 0
        self._safe_since = saved.since if saved else None
        self._saved = Cursors(saved.since, dict(saved.watermarks)) if saved else Cursors()
        self._dirty: set[str] = engine.touched()
        """Conversations whose watermark may differ from the saved one (so a save costs what changed)."""
        self._unsaved = 0

    @property
    def waiting(self) -> int:
        """Messages handed to the shell and not yielded yet."""
        return self._waiting

    @property
    def due(self) -> bool:
        """A save is due: something was yielded since the last one, and a burst ended or was long."""
        return self._unsaved > 0 and (self._waiting == 0 or self._unsaved >= self._every)

    def handed(self, messages: Iterable[Message]) -> None:
        """The shell got these from the engine and will yield them in this order."""
        for message in messages:
            self._pending.setdefault(message.conversation, deque()).append(message.seq)
            self._waiting += 1
        if self._waiting == 0:
            self._safe_since = self._engine.since

    def yielded(self, message: Message) -> None:
        """The application was given this message."""
        self._dirty.add(message.conversation)
        pending = self._pending.get(message.conversation)
        if pending:
            if pending[0] == message.seq:
                pending.popleft()
            else:  # not in the order handed; never expected, but stay correct
                try:
                    pending.remove(message.seq)
                except ValueError:
                    return
            self._waiting -= 1
            if not pending:
                del self._pending[message.conversation]
        self._unsaved += 1
        if self._waiting == 0:
            self._safe_since = self._engine.since

    def abandon(self) -> None:
        """The shell dropped what it had not yielded yet (its consumer went away): stop waiting for it.

        The engine counts those messages as delivered, so this run will not yield them again; a
        restarted client, reading what was saved before, will.
        """
        self._dirty.update(self._pending)
        self._pending.clear()
        self._waiting = 0
        self._safe_since = self._engine.since

    def changes(self) -> Cursors | None:
        """What is safe to save and differs from what was saved; ``None`` if nothing does."""
        engine, saved = self._engine, self._saved.watermarks
        self._dirty |= engine.touched()
        changed: dict[str, int] = {}
        for conversation in self._dirty | self._pending.keys():
            watermark = engine.watermark(conversation)
            if watermark is None:
                continue
            pending = self._pending.get(conversation)
            if pending:
                watermark = min(watermark, pending[0] - 1)
            if saved.get(conversation) != watermark:
                changed[conversation] = watermark
        since = engine.since if self._waiting == 0 else self._safe_since
        if not changed and since == self._saved.since:
            self._dirty.clear()
            self._unsaved = 0
            return None
        return Cursors(since, changed)

    def saved(self, cursors: Cursors) -> None:
        """The store holds ``cursors`` now (as returned by :meth:`changes`)."""
        self._saved.watermarks.update(cursors.watermarks)
        self._saved = Cursors(cursors.since, self._saved.watermarks)
        self._dirty.clear()  # conversations with messages still waiting are looked at every time
        self._unsaved = 0
