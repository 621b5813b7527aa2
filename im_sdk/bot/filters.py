"""Filters: which events a handler wants, composed with ``&``, ``|`` and ``~``.

A filter is called with the event and the dispatch ``data`` and answers ``True``/``False``, or a dict
of values to add to ``data`` (which counts as a match): :class:`Command` adds ``command``,
:class:`Regex` adds ``match``. Handlers receive those values as keyword arguments by name::

    @bot.on_message(Command("weather") & group)
    async def weather(msg: MessageEvent, command: CommandArgs) -> None:
        await msg.reply(f"weather in {command.args or 'nowhere'}")

Plain functions and coroutine functions of ``(event)`` work as filters too (``Filter.of(fn)``). Filters
that look at messages answer ``False`` for anything that is not a :class:`~im_sdk.events.MessageEvent`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from im_schema.content import MediaKind
from im_schema.presses import Press

from ..events import MessageEvent

__all__ = [
    "Command",
    "CommandArgs",
    "Conversation",
    "Filter",
    "Kind",
    "Mentioned",
    "Pressed",
    "Regex",
    "Sender",
    "Text",
    "commands_in",
    "direct",
    "group",
]

FilterResult = bool | dict[str, Any]


class Filter:
    """The base of every filter: subclasses implement :meth:`check`."""

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        """Whether ``event`` matches (a dict: it matches and adds these values to ``data``)."""
        raise NotImplementedError

    def __and__(self, other: Filter | Callable[[Any], Any]) -> Filter:
        return _And(self, Filter.of(other))

    def __rand__(self, other: Filter | Callable[[Any], Any]) -> Filter:
        return _And(Filter.of(other), self)

    def __or__(self, other: Filter | Callable[[Any], Any]) -> Filter:
        return _Or(self, Filter.of(other))

    def __ror__(self, other: Filter | Callable[[Any], Any]) -> Filter:
        return _Or(Filter.of(other), self)

    def __invert__(self) -> Filter:
        return _Not(self)

    @staticmethod
    def of(value: Filter | Callable[[Any], Any]) -> Filter:
        """A filter from a filter, or from a function (plain or async) of the event."""
        if isinstance(value, Filter):
            return value
        if callable(value):
            return _Function(value)
        raise TypeError(f"a filter must be a Filter or a callable, not {value!r}")


class _Function(Filter):
    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        result = self.function(event)
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, dict) else bool(result)

    def __repr__(self) -> str:
        return f"Filter.of({self.function!r})"


class _And(Filter):
    def __init__(self, left: Filter, right: Filter) -> None:
        self.left, self.right = left, right

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        first = await self.left.check(event, data)
        if not first:
            return False
        second = await self.right.check(event, {**data, **first} if isinstance(first, dict) else data)
        if not second:
            return False
        found = {**(first if isinstance(first, dict) else {}), **(second if isinstance(second, dict) else {})}
        return found or True

    def __repr__(self) -> str:
        return f"({self.left!r} & {self.right!r})"


class _Or(Filter):
    def __init__(self, left: Filter, right: Filter) -> None:
        self.left, self.right = left, right

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        return await self.left.check(event, data) or await self.right.check(event, data)

    def __repr__(self) -> str:
        return f"({self.left!r} | {self.right!r})"


class _Not(Filter):
    def __init__(self, inner: Filter) -> None:
        self.inner = inner

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        return not await self.inner.check(event, data)

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


def _conversation_of(event: Any) -> str | None:
    conversation = getattr(event, "conversation", None)
    return conversation if isinstance(conversation, str) else None


class _ConversationKind(Filter):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        conversation = _conversation_of(event)
        return conversation is not None and conversation.startswith(self.prefix)

    def __repr__(self) -> str:
        return "direct" if self.prefix == "d:" else "group"


direct: Filter = _ConversationKind("d:")
"""Events in a direct (one-to-one) conversation."""
group: Filter = _ConversationKind("g:")
"""Events in a group conversation."""


class Conversation(Filter):
    """Events in one of the given conversations (``"d:1:2"``, ``"g:7"``)."""

    def __init__(self, *conversations: str) -> None:
        self.conversations = frozenset(conversations)

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        return _conversation_of(event) in self.conversations


class Sender(Filter):
    """Messages from one of the given users, by id or username (usernames are looked up once)."""

    def __init__(self, *users: int | str) -> None:
        self.ids = {user for user in users if isinstance(user, int)}
        self._names = [user for user in users if isinstance(user, str)]

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        if not isinstance(event, MessageEvent):
            return False
        if self._names and "bot" in data:
            names, self._names = self._names, []
            for name in names:
                self.ids.add((await data["bot"].client.get_user(name)).id)
        return event.sender in self.ids


class Text(Filter):
    """Text messages whose text equals, contains or starts with something (``ignore_case`` optional)."""

    def __init__(
        self,
        equals: str | None = None,
        *,
        contains: str | None = None,
        startswith: str | None = None,
        ignore_case: bool = False,
    ) -> None:
        self.ignore_case = ignore_case
        self.equals, self.contains, self.startswith = (self._fold(v) for v in (equals, contains, startswith))

    def _fold(self, value: str | None) -> str | None:
        return value.casefold() if value is not None and self.ignore_case else value

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        text = event.text if isinstance(event, MessageEvent) else None
        if text is None:
            return False
        text = self._fold(text) or ""
        return (
            (self.equals is None or text == self.equals)
            and (self.contains is None or self.contains in text)
            and (self.startswith is None or text.startswith(self.startswith))
        )


class Regex(Filter):
    """Text messages a regular expression matches (``re.search``); adds ``match`` to the data."""

    def __init__(self, pattern: str | re.Pattern[str], flags: int = 0) -> None:
        self.pattern = re.compile(pattern, flags) if isinstance(pattern, str) else pattern

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        text = event.text if isinstance(event, MessageEvent) else None
        match = self.pattern.search(text) if text is not None else None
        return {"match": match} if match is not None else False


class Mentioned(Filter):
    """Messages that mention the bot (by name, or ``@all``)."""

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        me = data.get("me")
        return isinstance(event, MessageEvent) and me is not None and event.mentions_user(me.id)


class Kind(Filter):
    """Messages whose content is of one of the given kinds (``text``, ``image``, ``file``, ``voice``,
    ``video``); ``Kind.MEDIA`` is the four kinds that carry a file."""

    MEDIA: tuple[str, ...] = get_args(MediaKind)

    def __init__(self, *kinds: str) -> None:
        self.kinds = frozenset(kinds)

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        return isinstance(event, MessageEvent) and event.message.content.kind in self.kinds


@dataclass(frozen=True)
class CommandArgs:
    """A parsed command: ``/weather paris 7d`` reads as ``name="weather"``, ``args="paris 7d"``."""

    name: str
    """The command, without its prefix or ``@botname``."""
    args: str
    """Everything after the command, stripped (``""`` when nothing follows)."""
    prefix: str = "/"

    @property
    def argv(self) -> list[str]:
        """The arguments split on whitespace."""
        return self.args.split()


_COMMAND = re.compile(
    r"(?P<name>[A-Za-z0-9_][A-Za-z0-9_-]{0,63})(?:@(?P<to>[A-Za-z0-9_.-]+))?(?:\s+(?P<args>.*))?", re.S
)


class Command(Filter):
    """Text messages that start with one of the commands (``/help``, ``/weather paris``).

    Adds ``command`` (a :class:`CommandArgs`) to the data. ``/weather@otherbot`` is ignored, so that
    several bots can share a group; ``/weather@thisbot`` matches. Without names, any command matches.
    """

    def __init__(
        self,
        *names: str,
        prefix: str = "/",
        ignore_case: bool = True,
        description: str | None = None,
        args: str | None = None,
    ) -> None:
        self.ignore_case = ignore_case
        self.ordered = tuple(name.lower() if ignore_case else name for name in names)
        """The names in the order given (the first is the one declared to users)."""
        self.names = frozenset(self.ordered)
        self.prefix = prefix
        self.description = description
        """Shown in ``/help`` and to users typing ``/`` (the bot declares its named commands at start)."""
        self.args = args
        """A hint for the arguments (``CITY``), shown after the name."""

    def __repr__(self) -> str:
        return f"Command({', '.join(map(repr, self.ordered))})"

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        text = event.text if isinstance(event, MessageEvent) else None
        if text is None or not text.startswith(self.prefix):
            return False
        match = _COMMAND.fullmatch(text[len(self.prefix) :])
        if match is None:
            return False
        name = match["name"].lower() if self.ignore_case else match["name"]
        if self.names and name not in self.names:
            return False
        me = data.get("me")
        if match["to"] is not None and (me is None or match["to"].lower() != me.username.lower()):
            return False
        return {"command": CommandArgs(name, (match["args"] or "").strip(), self.prefix)}


def commands_in(item: Filter) -> list[Command]:
    """The :class:`Command` filters a filter requires (inside ``&`` and ``|``, not under ``~``)."""
    if isinstance(item, Command):
        return [item]
    if isinstance(item, _And | _Or):
        return commands_in(item.left) + commands_in(item.right)
    return []


class Pressed(Filter):
    """Presses of the bot's buttons (:class:`~im_sdk.bot.ButtonPress`) with one of the given button
    ids, or any id that starts with ``prefix`` (``Pressed(prefix="vote:")``); without either, any press.
    Adds ``button`` (the id pressed) to the data."""

    def __init__(self, *ids: str, prefix: str | None = None) -> None:
        self.ids = frozenset(ids)
        self.prefix = prefix

    async def check(self, event: Any, data: dict[str, Any]) -> FilterResult:
        button = getattr(event, "button", None)
        if not isinstance(button, str) or not isinstance(getattr(event, "press", None), Press):
            return False
        if self.ids or self.prefix is not None:
            wanted = button in self.ids or (self.prefix is not None and button.startswith(self.prefix))
            if not wanted:
                return False
        return {"button": button}
