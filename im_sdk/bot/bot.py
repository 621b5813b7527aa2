"""The :class:`Bot`: a root :class:`~im_sdk.bot.router.Router` that runs an :class:`~im_sdk.AsyncClient`.

Scheduling: events of one conversation are handled one at a time, in seq order; different
conversations run concurrently (at most ``concurrency`` handlers at once; notices that belong to no
conversation share one lane). The bot's own messages are not dispatched.

Exactly-once handling (with ``state_path``): a message counts as handled only when its handler (or
the decision that no handler wants it) finished; the per-conversation cursor then advances in the
SQLite file at once (:class:`~im_sdk.realtime.store.CursorKeeper` in manual mode), never past a
message whose handler has not finished. A bot killed at any point therefore handles again, after a
restart, exactly the messages whose handlers had not finished. What such a handler sends is not sent
twice: every send made while handling a message (``msg.reply``, ``event.answer``, ``bot.send_*``)
carries a ``client_msg_id`` derived from the bot's account, the conversation, the seq and the send's
rank within the handler, and the server stores one message per ``(sender, client_msg_id)``; the second
run's send returns the message the first run stored.

Button presses (:class:`~im_sdk.bot.events.ButtonPress`) are kept by the server until acknowledged:
the bot lists the pending ones after every (re)connect, handles each in its conversation's lane and
acknowledges it once its handler finished, so a press made while the bot was away is handled, and one
whose handler was interrupted is handled again (its sends get ids derived from the press).

Commands: at start the bot declares the named :class:`~im_sdk.bot.filters.Command` filters of its
handlers (with their descriptions) to the server, where users list them; unless a handler names
``help`` itself, the bot answers ``/help`` with that list.

Lifecycle: ``bot.run()`` for a script (stops on SIGINT/SIGTERM); ``await bot.start()`` then
``await bot.stop()`` (or ``async with bot:``) inside an application. Stopping lets running handlers
finish (up to ``shutdown_timeout``), drops what was queued behind them (unacknowledged, hence
delivered again by the next start), saves the cursors and closes the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import os
import signal
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from im_schema.buttons import Button
from im_schema.files import Upload
from im_schema.models import Message, User
from im_schema.presses import BotCommand

from .._async_client import AsyncClient
from .._async_io import Reply
from .._files import Progress, Source
from ..events import ButtonPressEvent, Event, MessageEvent, NoticeEvent
from ..realtime.protocol import StartFrom
from ..realtime.store import CursorKeeper
from .events import ButtonPress, FriendRequest, GroupInvitation, bot_event
from .filters import Command, commands_in
from .router import Router

__all__ = ["Bot", "HandlingContext"]

log = logging.getLogger(__name__)

_DEFAULT_SERVER = "http://127.0.0.1:8080"


@dataclass
class HandlingContext:
    """The message being handled: the source of idempotent send ids."""

    account: int
    conversation: str
    seq: int
    sends: int = 0

    def next_send_id(self) -> str:
        """The ``client_msg_id`` of the handler's next send: the same on every run for the same rank."""
        rank, self.sends = self.sends, self.sends + 1
        key = f"bot:{self.account}:{self.conversation}:{self.seq}:{rank}".encode()
        return "b" + hashlib.blake2b(key, digest_size=16).hexdigest()


_handling: contextvars.ContextVar[HandlingContext | None] = contextvars.ContextVar("im_bot_handling", default=None)


def _conversation_of(event: object) -> str:
    conversation = getattr(event, "conversation", None)
    return conversation if isinstance(conversation, str) else ""


class Bot(Router):
    """A bot: handlers (it is a :class:`Router`) and the client that feeds them.

    ::

        bot = Bot.from_env()

        @bot.on_message(Command("start"))
        async def start(msg: MessageEvent) -> None:
            await msg.reply("hello!")

        bot.run()

    Args:
        server: The API's base URL.
        username: Log in with this account (with ``password``) when the bot starts.
        password: The account's password.
        token: A bot account's token (``im admin bots create``): the bot logs in with it
            (:meth:`~im_sdk.AsyncClient.login_bot`) when it starts.
        access_token: A session's access token instead (``refresh_token`` renews it).
        refresh_token: Renews ``access_token`` when it expires.
        device: The device name the bot logs in as (its sync cursors are kept per device).
        state_path: A SQLite file for exactly-once handling across restarts (see the module docstring);
            without it a restarted bot starts as ``start`` says.
        start: Where a conversation seen for the first time begins (``unread``, ``latest``, ``all``).
        concurrency: At most this many handlers run at once (across conversations).
        shutdown_timeout: Seconds :meth:`stop` lets running handlers finish before cancelling them.
        declare_commands: Declare the named commands of the handlers at start, and answer ``/help``
            (unless a handler takes it).
        client: A client of your own (its tokens are used as they are; ``server`` and the credentials
            are then ignored).
        **client_args: Passed to :class:`~im_sdk.AsyncClient` (``backoff``, ``retry``, ``timeout``...).
    """

    def __init__(
        self,
        server: str = _DEFAULT_SERVER,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        device: str = "bot",
        state_path: str | os.PathLike[str] | None = None,
        start: StartFrom = "unread",
        concurrency: int = 64,
        shutdown_timeout: float = 30.0,
        declare_commands: bool = True,
        client: AsyncClient | None = None,
        name: str | None = None,
        **client_args: Any,
    ) -> None:
        super().__init__(name or "bot")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if client is None and token is None and access_token is None and (username is None or password is None):
            raise ValueError("give username and password, or a bot token, or an access token, or a client")
        self.client = client or AsyncClient(
            server, access_token=access_token, refresh_token=refresh_token, **client_args
        )
        """The client the bot runs on (any SDK call: ``bot.client.groups.info(7)``)."""
        if state_path is None and client is not None and client._cursors.store is not None:
            state_path = client._cursors.store.path
        # A message counts as seen when its handler finished, not when the client yielded it; and after
        # every (re)connect the bot lists what notices announce but nobody replays.
        self.client._cursors = CursorKeeper(
            state_path, self.client.server_url, manual=True, on_ready=self._on_connected
        )
        self.state_path = Path(state_path) if state_path is not None else None
        self._username, self._password, self._device = username, password, device
        self._bot_token = token
        self.declare_commands = declare_commands
        self.commands: list[BotCommand] = []
        """The commands declared at start (the named :class:`Command` filters of the handlers)."""
        self._default_help = False
        self._start_from: StartFrom = start
        self._concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.me: User | None = None
        """The bot's account, once started."""
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: dict[str, deque[Any]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._consumer: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._connected = asyncio.Event()
        self._seen: set[tuple[str, int]] = set()
        self._listing: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self.handled = 0
        """Events dispatched so far (handled or not wanted), for tests and metrics."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Bot:
        """A bot configured by ``IM_SERVER`` (default ``http://127.0.0.1:8080``), ``IM_BOT_TOKEN`` (a bot
        account's token), or ``IM_USERNAME`` and ``IM_PASSWORD``, or ``IM_TOKEN`` (an access token, and
        ``IM_REFRESH_TOKEN``), ``IM_DEVICE`` and ``IM_STATE_PATH``; keyword arguments win over the
        environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "server": env.get("IM_SERVER", _DEFAULT_SERVER),
            "username": env.get("IM_USERNAME"),
            "password": env.get("IM_PASSWORD"),
            "token": env.get("IM_BOT_TOKEN"),
            "access_token": env.get("IM_TOKEN"),
            "refresh_token": env.get("IM_REFRESH_TOKEN"),
            "device": env.get("IM_DEVICE", "bot"),
            "state_path": env.get("IM_STATE_PATH"),
        }
        values = {key: value for key, value in values.items() if value is not None}
        values.update(overrides)
        return cls(**values)

    # Sending (idempotent inside a handler) --------------------------------------------------------

    def _send_id(self, given: str | None) -> str | None:
        if given is not None:
            return given
        context = _handling.get()
        return context.next_send_id() if context is not None else None

    async def send_text(
        self,
        to: int | str,
        text: str,
        *,
        client_msg_id: str | None = None,
        reply_to: int | None = None,
        mentions: list[int] | None = None,
        mention_all: bool = False,
        buttons: Sequence[Button | tuple[str, str]] | None = None,
    ) -> Message:
        """Send text (see :meth:`AsyncClient.send_text`); inside a handler the send id is derived from
        the message handled, so a handler run again after a crash does not send it twice."""
        return await self.client.send_text(
            to,
            text,
            client_msg_id=self._send_id(client_msg_id),
            reply_to=reply_to,
            mentions=mentions,
            mention_all=mention_all,
            buttons=buttons,
        )

    async def send_media(
        self,
        to: int | str,
        source: Source | Upload,
        *,
        kind: Any = None,
        caption: str | None = None,
        name: str | None = None,
        progress: Progress | None = None,
        client_msg_id: str | None = None,
    ) -> Message:
        """Send a file of any kind (see :meth:`AsyncClient.send_media`), idempotent inside a handler."""
        return await self.client.send_media(
            to,
            source,
            kind=kind,
            caption=caption,
            name=name,
            progress=progress,
            client_msg_id=self._send_id(client_msg_id),
        )

    async def send_file(self, to: int | str, source: Source | Upload, **kwargs: Any) -> Message:
        """Send a file as it is (see :meth:`send_media`)."""
        return await self.send_media(to, source, kind="file", **kwargs)

    async def send_image(self, to: int | str, source: Source | Upload, **kwargs: Any) -> Message:
        """Send a picture (see :meth:`send_media`)."""
        return await self.send_media(to, source, kind="image", **kwargs)

    # Lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Bot:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Log in (unless the client has a token), then handle events in the background until
        :meth:`stop`. Pending friend requests and group invitations are dispatched first (notices are
        not replayed, so those that came while the bot was away would be missed otherwise)."""
        if self._consumer is not None:
            raise RuntimeError("the bot is already running")
        if self.client.session is None and self.client._state.access_token is None:
            if self._bot_token is not None:
                await self.client.login_bot(self._bot_token, device=self._device)
            elif self._password is not None and self._username is not None:
                await self.client.login(self._username, self._password, device=self._device)
        me = await self.client.whoami()
        self.me = me.user
        if self.declare_commands:
            await self._declare_commands()
        self._stopping = False
        self._stopped.clear()
        self._connected.clear()
        log.info("bot %s (%d) starting", self.me.username, self.me.id)
        self._consumer = asyncio.create_task(self._consume(), name=f"{self.name}-events")

    def _declared(self) -> tuple[list[BotCommand], bool]:
        found: dict[str, BotCommand] = {}
        takes_help = False
        routers: list[Router] = [self]
        while routers:
            router = routers.pop(0)
            for registered in router._handlers:
                for item in registered.filters:
                    for command in commands_in(item):
                        takes_help = takes_help or "help" in command.names
                        if not command.ordered or command.prefix != "/":
                            continue
                        name = command.ordered[0]
                        if name in found:
                            continue
                        try:
                            found[name] = BotCommand(
                                name=name, description=command.description or f"/{name}", args=command.args
                            )
                        except ValueError:
                            log.warning("command %r cannot be declared (names are 1-32 of a-z 0-9 _ -)", name)
            routers.extend(router._children)
        commands = list(found.values())
        if not takes_help:
            commands.insert(0, BotCommand(name="help", description="list the commands"))
        return commands, not takes_help

    async def _declare_commands(self) -> None:
        self.commands, self._default_help = self._declared()
        try:
            await self.client.set_commands(self.commands[:50])
        except Exception as exc:  # an older server, or a rate limit: the bot works without
            log.warning("cannot declare the commands: %s", exc)

    async def _answer_help(self, event: MessageEvent[Any]) -> bool:
        if not self._default_help or not await Command("help").check(event, {"me": self.me}):
            return False
        lines = [
            f"/{command.name}{' ' + command.args if command.args else ''} - {command.description}"
            for command in self.commands
        ]
        try:
            await self.send_text(event.conversation, "\n".join(lines), reply_to=event.seq)
        except Exception:
            log.exception("the default /help failed")
        return True

    async def wait_connected(self) -> None:
        """Wait until the bot's first connection to a gateway is ready (events flow from then on)."""
        await self._connected.wait()

    def _on_connected(self) -> None:
        # Friend requests and invitations that came while the bot was away (or reconnecting) were
        # announced by notices it never got: list the pending ones, now that new notices reach it.
        if self._listing is None or self._listing.done():
            self._listing = asyncio.get_running_loop().create_task(self._list_pending())

    async def _list_pending(self) -> None:
        try:
            for request in await self.client.friends.requests("incoming"):
                self._enqueue(FriendRequest(request, self))
            for invitation in await self.client.groups.invitations():
                self._enqueue(GroupInvitation(invitation, self))
            after = 0
            while True:
                page = await self.client.pending_presses(after=after, limit=100)
                for press in page.presses:
                    self._enqueue(ButtonPress(press, self))
                if not page.has_more or not page.presses:
                    break
                after = page.presses[-1].id
        except Exception:
            log.exception("cannot list pending friend requests, invitations and button presses")
        finally:
            self._connected.set()

    def _first_time(self, event: object) -> bool:
        # A pending request may be listed and announced live: handle it once.
        if isinstance(event, NoticeEvent | ButtonPressEvent):
            event = bot_event(event, self)
        if isinstance(event, ButtonPress):
            key: tuple[str, int] = ("press", event.press.id)
        elif isinstance(event, FriendRequest):
            key = ("friend", event.request.id)
        elif isinstance(event, GroupInvitation) and event.pending:
            key = ("invitation", event.invitation.id)
        else:
            return True
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    async def _consume(self) -> None:
        try:
            async with contextlib.aclosing(self.client.events(start=self._start_from)) as events:
                async for event in events:
                    await self._slots.acquire()
                    self._enqueue(event, slot=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the event stream of %s ended", self.name)
            self._stopped.set()
            raise

    def _enqueue(self, event: Any, *, slot: bool = False) -> None:
        if not self._first_time(event):
            if slot:
                self._slots.release()
            return
        key = _conversation_of(event)
        lane = self._lanes.setdefault(key, deque())
        lane.append((event, slot))
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key, lane), name=f"{self.name}-lane-{key or 'notices'}")

    async def _work(self, key: str, lane: deque[Any]) -> None:
        try:
            while lane and not self._stopping:
                event, slot = lane.popleft()
                try:
                    await self._handle(event)
                finally:
                    if slot:
                        self._slots.release()
        finally:
            # No await between the last check of the lane and these lines: a new event either found
            # this worker alive or starts a new one.
            del self._workers[key]
            if not lane:
                self._lanes.pop(key, None)

    async def _handle(self, event: Event[Reply] | object) -> None:
        assert self.me is not None
        message = event.message if isinstance(event, MessageEvent) else getattr(event, "message", None)
        own = isinstance(event, MessageEvent) and event.sender == self.me.id
        if not own:
            if isinstance(event, MessageEvent):
                # Bound to the bot, so that msg.reply() goes through its idempotent sends.
                event = MessageEvent(event.message, self)
            typed = (
                bot_event(event, self) if isinstance(event, MessageEvent | NoticeEvent | ButtonPressEvent) else event
            )
            if isinstance(message, Message):
                context: HandlingContext | None = HandlingContext(self.me.id, message.conversation, message.seq)
            elif isinstance(typed, ButtonPress):
                # A press handled again after a crash sends what its first run sent, once.
                press = typed.press
                key = f"{press.conversation}:{press.seq}:press:{press.user_id}:{press.button}"
                context = HandlingContext(self.me.id, key, press.id)
            else:
                context = None
            token = _handling.set(context)
            try:
                if not (isinstance(event, MessageEvent) and await self._answer_help(event)):
                    await self.dispatch(typed, {"bot": self, "me": self.me})
            finally:
                _handling.reset(token)
            if isinstance(typed, ButtonPress):
                # In the background, so that the lane goes on; stop() waits for these.
                task = asyncio.create_task(self._acknowledge(typed.press.id), name=f"ack-press-{typed.press.id}")
                self._acks.add(task)
                task.add_done_callback(self._acks.discard)
        if isinstance(message, Message) and self.client._cursors.manual:
            self.client._cursors.acknowledge(message)
        self.handled += 1

    async def _acknowledge(self, press: int) -> None:
        try:
            await self.client.ack_press(press)
        except Exception as exc:  # listed again after the next connect, and handled again
            log.warning("cannot acknowledge press %d: %s", press, exc)

    async def stop(self) -> None:
        """Stop taking events, let running handlers finish (up to ``shutdown_timeout``), save the
        cursors and close the client."""
        self._stopping = True
        consumer, self._consumer = self._consumer, None
        for task in (consumer, self._listing):
            while task is not None and not task.done():
                # Cancelled again if it ever swallows a cancellation (awaited code may catch one).
                task.cancel()
                await asyncio.wait({task}, timeout=5)
            if task is not None and not task.cancelled() and task.exception() is not None:
                log.debug("the %s task ended with %r", task.get_name(), task.exception())
        workers = list(self._workers.values())
        if workers:
            _, late = await asyncio.wait(workers, timeout=self.shutdown_timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d handlers did not finish within %.0fs; cancelled", len(late), self.shutdown_timeout)
                await asyncio.wait(late)
        if self._acks:
            await asyncio.wait(set(self._acks), timeout=self.shutdown_timeout)
        self._lanes.clear()
        self._slots = asyncio.Semaphore(self._concurrency)
        await self.client.aclose()
        self._stopped.set()

    async def wait(self) -> None:
        """Wait until the bot stops (by :meth:`stop`, or because its event stream failed for good)."""
        await self._stopped.wait()
        consumer = self._consumer
        if consumer is not None and consumer.done() and not consumer.cancelled():
            consumer.result()  # the reason it ended

    def run(self) -> None:
        """Start, handle events until SIGINT or SIGTERM (or a fatal error such as a revoked token), stop."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
                    loop.add_signal_handler(sig, self._stopped.set)
            await self.start()
            try:
                await self.wait()
            finally:
                await self.stop()

        asyncio.run(main())
