"""``im chat``: a full-screen terminal client on the SDK's :class:`~im_sdk.AsyncClient`.

Layout: the conversation list (unread badges, ``@`` for a mention, ● for a friend online) and the
pending requests on the left; the message pane (anchored to the newest message, older pages loaded when
scrolled to the top), the typing line and the input in the middle; the group's members on the right;
the connection state in the title bar.

Contract:
- One worker (``listen``) runs :meth:`AsyncClient.events` for the app's life; each event becomes a
  Textual message (:mod:`im_cli.tui.events`). The SDK reconnects and resyncs by itself, so the app keeps
  working across server restarts; the state shows as ``connected`` / ``reconnecting``.
- Every other network call runs in a ``@work`` worker; failures are shown, never raised.
- The input sends text (``@name`` mentions a member, ``@all`` everyone) or runs a command: ``/reply SEQ
  TEXT``, ``/edit SEQ TEXT``, ``/recall SEQ``, ``/file PATH [CAPTION]``, ``/download SEQ [PATH]``,
  ``/open NAME``, ``/accept NAME``, ``/decline NAME``, ``/members``, ``/press SEQ N``, ``/help``, ``/quit``.
- Quick-reply buttons show under their message (``[1] Yes  [2] No``); clicking one, or ``/press SEQ N``
  (its number or id), presses it. In a direct conversation with an account that declared commands (a
  bot), typing ``/`` lists them, ``/help`` shows them too, and a ``/command`` that is not one of the
  app's own is sent to the bot as text.
- Pending friend requests and group invitations are listed under the conversations and answered with
  ``/accept NAME`` or ``/decline NAME`` (the sender's name, or the group's).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Input, Label, ListItem, ListView, ProgressBar, Static

from im_schema.content import SystemContent, SystemEvent, is_blank
from im_schema.events import ButtonPressNotice, FriendRequestNotice, GroupInvitationNotice
from im_schema.groups import Group, GroupInvitation
from im_schema.ids import direct_conversation
from im_schema.models import ConversationSummary, Message
from im_schema.presses import BotCommand
from im_schema.social import FriendRequest
from im_sdk import AsyncClient, IMError
from im_sdk.events import (
    ButtonPressEvent,
    EditEvent,
    MessageEvent,
    NoticeEvent,
    PresenceEvent,
    ReadEvent,
    RecallEvent,
    StreamEvent,
    TypingEvent,
)

from ..output import printable, printable_text
from ..render import button_for, commands_text, connection_log, connection_lost, connection_up, notice_text
from ..streaming import final_message
from ..transfer import human_size, media_content
from .events import (
    ConnectionChanged,
    Edited,
    Incoming,
    NoticeArrived,
    PresenceChanged,
    Read,
    Recalled,
    StreamGrew,
    Typing,
)
from .widgets import ChatView, ConversationItem, ConversationRow, MessageItem, message_text

__all__ = ["ChatApp"]

_HIDDEN_EVENTS = (SystemEvent.MESSAGE_RECALLED, SystemEvent.MESSAGE_EDITED)  # shown by updating the message itself
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]+)")

HELP = (
    "Type to send. @name mentions a member, @all everyone. Commands: /reply SEQ TEXT, /edit SEQ TEXT, "
    "/recall SEQ, /file PATH [CAPTION], /download SEQ [PATH], /open NAME, /accept NAME, /decline NAME, "
    "/members, /press SEQ N, /quit. Ctrl-N/Ctrl-P: next/previous conversation."
)


Worker = TypeVar("Worker", bound=Callable[..., Coroutine[Any, Any, Any]])


def _until_closed(method: Worker) -> Worker:
    """A worker that stops quietly when the app closes under it (its widgets are gone by then)."""

    @functools.wraps(method)
    async def wrapper(self: ChatApp, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except NoMatches:
            if self.closing:
                return None
            raise

    return cast(Worker, wrapper)


async def _to_the_end(change: Awaitable[object]) -> None:
    """Await a mount or a removal of widgets to its end, even if the worker awaiting it is cancelled meanwhile
    (a newer call, the app closing): Textual awaits the widgets' own tasks there, a cancel would cancel them
    too, and the app would then fail when it closes."""
    await asyncio.shield(asyncio.ensure_future(change))


def _one_at_a_time(method: Worker) -> Worker:
    """A worker body that never runs twice at once and is never cancelled for a newer call: a call while
    it runs asks for one more run after it. (An exclusive worker is cancelled by the next call; cancelled
    while it mounts or removes widgets, it cancels their tasks too, and the app fails when it closes.)"""

    @functools.wraps(method)
    async def wrapper(self: ChatApp, *args: Any, **kwargs: Any) -> Any:
        name = method.__name__
        if name in self._loading:
            self._load_again.add(name)
            return None
        self._loading.add(name)
        try:
            while True:
                self._load_again.discard(name)
                result = await method(self, *args, **kwargs)
                if name not in self._load_again:
                    return result
        finally:
            self._loading.discard(name)

    return cast(Worker, wrapper)


def _local_file(name: str) -> tuple[Path, int | None]:
    """The path a user typed, and its size (``None``: not a readable file)."""
    path = Path(name).expanduser()
    try:
        return path, path.stat().st_size if path.is_file() else None
    except OSError:
        return path, None


class _StateLog(logging.Handler):
    """The SDK's reconnect log lines, as :class:`ConnectionChanged` messages."""

    def __init__(self, post: Callable[[ConnectionChanged], object]) -> None:
        super().__init__(logging.INFO)
        self.post = post

    def emit(self, record: logging.LogRecord) -> None:
        if connection_up(record):
            self.post(ConnectionChanged("connected"))
            return
        reason = connection_lost(record)
        if reason is not None:
            self.post(ConnectionChanged("reconnecting", reason))


class ChatApp(App[None]):
    """The full-screen client; see the module docstring."""

    TITLE = "im chat"
    ENABLE_COMMAND_PALETTE = False
    PAGE = 40
    """Messages loaded per page of history."""
    CSS = """
    #sidebar { width: 32; border-right: solid $primary-background; }
    #conversations { height: 1fr; }
    #requests { height: auto; max-height: 10; }
    #main { width: 1fr; }
    #chat { height: 1fr; padding: 0 1; }
    #chat .message { margin: 0 0 0 0; }
    #typing { height: 1; color: $text-muted; padding: 0 1; }
    #transfer { height: 1; display: none; }
    #transfer.active { display: block; }
    #members { width: 28; border-left: solid $primary-background; padding: 0 1; display: none; }
    #members.active { display: block; }
    .heading { color: $text-muted; text-style: bold; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "next_conversation", "next"),
        Binding("ctrl+p", "previous_conversation", "previous"),
        Binding("ctrl+q", "quit", "quit"),
    ]

    def __init__(
        self,
        client: AsyncClient,
        *,
        me: int,
        username: str,
        server: str,
        open_first: str | None = None,
        downloads: Path | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.me = me
        self.username = username
        self.server = server
        self.open_first = open_first
        self.downloads = downloads or Path.cwd()
        self.names: dict[int, str] = {me: username}
        self.groups: dict[int, Group] = {}
        self.rows: dict[str, ConversationRow] = {}
        self.current: str | None = None
        self.oldest: int | None = None
        self.has_older = False
        self.loading_older = False
        self.messages: dict[int, Message] = {}
        self.member_names: dict[str, int] = {}
        self.requests: list[FriendRequest] = []
        self.invites: list[GroupInvitation] = []
        self.connection = "connecting"
        self.listed = False
        """Whether the conversation list was ever loaded (the server may be down when the app starts)."""
        self.typing_until: dict[int, float] = {}
        self._typing_sent = 0.0
        self._state_log = _StateLog(self.post_message)
        self._logging = contextlib.ExitStack()
        self.commands: dict[int, list[BotCommand]] = {}
        """What each peer (a bot) declared, fetched when its conversation opens."""
        self._loading: set[str] = set()
        self._load_again: set[str] = set()

    # Layout ------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("Conversations", classes="heading")
                yield ListView(id="conversations")
                yield Label("Requests", classes="heading")
                yield ListView(id="requests")
            with Vertical(id="main"):
                yield ChatView(id="chat")
                yield Static("", id="typing")
                yield ProgressBar(id="transfer", show_eta=False)
                yield Input(placeholder="Pick a conversation, or /open NAME; /help for commands", id="input")
            yield Static("", id="members")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = f"{self.username} · connecting to {self.server}"
        self.query_one(ChatView).anchor()
        self._logging.enter_context(connection_log(self._state_log))
        self.set_interval(1.0, self._expire_typing)
        self.load_conversations()
        self.load_requests()
        self.listen()

    async def on_unmount(self) -> None:
        self._logging.close()  # the SDK logger as it was before the app

    @property
    def closing(self) -> bool:
        """Whether the app is exiting (workers then find no widgets to update)."""
        return bool(self._exit or self._closing or self._closed or not self.is_running)

    # Names -------------------------------------------------------------------------------------------

    def name_of(self, user_id: int) -> str:
        return self.names.get(user_id, f"#{user_id}")

    async def learn_names(self, user_ids: set[int]) -> None:
        for user_id in user_ids - set(self.names):
            try:
                self.names[user_id] = (await self.client.get_user(user_id)).username
            except IMError:
                self.names[user_id] = f"#{user_id}"

    def _ids_in(self, message: Message) -> set[int]:
        ids = {message.sender, *message.mentions}
        if message.reply_to is not None:
            ids.add(message.reply_to.sender)
        content = message.content
        if isinstance(content, SystemContent):
            for key in ("user",):
                if isinstance(content.data.get(key), int):
                    ids.add(int(content.data[key]))
            ids.update(int(user) for user in content.data.get("users", []) if isinstance(user, int))
        return ids

    def title_of(self, conversation: str, peer: int | None = None) -> str:
        if conversation.startswith("g:"):
            group = self.groups.get(int(conversation[2:]))
            return group.name if group else conversation
        if peer is None:
            first, second = (int(part) for part in conversation.split(":")[1:])
            peer = second if first == self.me else first
        return self.name_of(peer)

    # Status ------------------------------------------------------------------------------------------

    def say(self, text: str, *, error: bool = False) -> None:
        """A short notification (errors in red)."""
        # Never markup: the text may quote others (a friend request's message), and a stray "[/x]"
        # in it would raise instead of being shown.
        self.notify(printable(text), severity="error" if error else "information", timeout=6, markup=False)

    def on_connection_changed(self, event: ConnectionChanged) -> None:
        if event.state == "connected":
            again = self.connection == "reconnecting"
            self.sub_title = f"{self.username} · connected to {self.server}"
            if again:
                self.say("reconnected")
                self.refresh_streams()
            # Started while the server was away, the first load failed: load now, once per connection.
            if not self.listed and self.connection != "connected":
                self.load_conversations()
                self.load_requests()
        else:
            reason = event.reason if len(event.reason) <= 60 else event.reason[:59] + "…"
            self.sub_title = printable(f"{self.username} · reconnecting to {self.server}… ({reason})")
        self.connection = event.state

    # The event stream ----------------------------------------------------------------------------------

    @work(exclusive=True, group="listen")
    @_until_closed
    async def listen(self) -> None:
        """Run the SDK's event stream for the app's life; every event becomes a Textual message."""
        client = self.client
        try:
            async for event in client.events(start="latest"):
                if isinstance(event, MessageEvent):
                    self.post_message(Incoming(event.message))
                elif isinstance(event, RecallEvent):
                    self.post_message(Recalled(event.conversation, event.seq, event.by, event.message))
                elif isinstance(event, EditEvent):
                    self.post_message(Edited(event.conversation, event.seq, event.text, event.message))
                elif isinstance(event, ReadEvent):
                    self.post_message(Read(event.conversation, event.user_id, event.read_seq))
                elif isinstance(event, TypingEvent):
                    self.post_message(Typing(event.conversation, event.user_id, event.active))
                elif isinstance(event, PresenceEvent):
                    self.post_message(PresenceChanged(event.user_id, event.online))
                elif isinstance(event, StreamEvent):
                    self.post_message(StreamGrew(event.conversation, event.seq, event.text, event.state))
                elif isinstance(event, NoticeEvent):
                    self.post_message(NoticeArrived(event.notice))
                elif isinstance(event, ButtonPressEvent):  # someone pressed a button of my message
                    self.post_message(NoticeArrived(ButtonPressNotice(press=event.press)))
        except IMError as exc:  # authentication ended: nothing more will come
            self.sub_title = printable(f"{self.username} · disconnected: {exc}")
            self.say(f"disconnected: {exc}", error=True)

    async def on_incoming(self, event: Incoming) -> None:
        message = event.message
        await self.learn_names(self._ids_in(message))
        row = self.rows.get(message.conversation)
        if row is None:
            await self._refresh_groups_if_needed(message.conversation)
            # Listed meanwhile (the list loads in a worker): take that row, never add a second one.
            row = self.rows.get(message.conversation) or self._add_row(message.conversation, peer=None)
        row.max_seq = max(row.max_seq, message.seq)
        content = message.content
        if isinstance(content, SystemContent) and content.event in _HIDDEN_EVENTS:
            return
        if message.conversation == self.current:
            await self._append(message)
            self.typing_until.pop(message.sender, None)
            if message.sender != self.me:
                self.mark_read(message.conversation, message.seq)
        elif message.sender != self.me:
            row.unread += 1
            row.mentioned = row.mentioned or message.mention_all or self.me in message.mentions
            self._move_to_top(row)
        if isinstance(content, SystemContent) and message.conversation == self.current:
            self.load_members()

    async def on_recalled(self, event: Recalled) -> None:
        await self._replace(event.conversation, event.seq)

    async def on_edited(self, event: Edited) -> None:
        await self._replace(event.conversation, event.seq)

    @work(group="streams")
    @_until_closed
    async def refresh_streams(self) -> None:
        """Read again the streaming messages shown as still open: they may have ended while we were away
        (stream notices are not replayed)."""
        conversation = self.current
        if conversation is None:
            return
        for seq in [seq for seq, message in self.messages.items() if message.stream == "open"]:
            await self._replace(conversation, seq)

    def on_stream_grew(self, event: StreamGrew) -> None:
        """A streaming message grows in place (a missed update heals at the next: each has the whole text)."""
        message = self.messages.get(event.seq) if event.conversation == self.current else None
        if message is None or message.stream is None:
            return
        grown = final_message(
            message, StreamEvent(event.conversation, event.seq, message.sender, event.text, event.state)
        )
        self.messages[event.seq] = grown
        for item in self.query_one(ChatView).items():
            if item.message.seq == event.seq:
                item.message = grown
                item.update(self._render(grown))

    def on_read(self, event: Read) -> None:
        row = self.rows.get(event.conversation)
        if row is None:
            return
        if event.user_id == self.me:
            row.unread = 0  # read on another device of mine
            row.mentioned = False
            self._refresh_row(row)
            return
        if row.peer is not None:
            row.peer_read_seq = max(row.peer_read_seq, event.read_seq)
            if event.conversation == self.current:
                self._rerender_mine()

    def on_typing(self, event: Typing) -> None:
        if event.conversation != self.current or event.user_id == self.me:
            return
        if event.active:
            self.typing_until[event.user_id] = time.monotonic() + 6
        else:
            self.typing_until.pop(event.user_id, None)
        self._show_typing()

    def _expire_typing(self) -> None:
        now = time.monotonic()
        for user_id in [user for user, until in self.typing_until.items() if until < now]:
            del self.typing_until[user_id]
        self._show_typing()

    def _show_typing(self) -> None:
        names = [self.name_of(user) for user in self.typing_until]
        text = "" if not names else f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} typing…"
        self.query_one("#typing", Static).update(Text(printable(text)))

    def on_presence_changed(self, event: PresenceChanged) -> None:
        for row in self.rows.values():
            if row.peer == event.user_id:
                row.online = event.online
                self._refresh_row(row)

    async def on_notice_arrived(self, event: NoticeArrived) -> None:
        notice = event.notice
        if isinstance(notice, FriendRequestNotice):
            sender = notice.request.from_user.username
            note = f": {notice.request.message}" if notice.request.message else ""
            text = f"{sender} wants to be your friend{note} (/accept {sender})"
        elif isinstance(notice, GroupInvitationNotice) and notice.invitation.status == "pending":
            invite = notice.invitation
            text = f"{invite.inviter.username} invites you to {invite.group_name} (/accept {invite.group_name})"
        else:
            text = notice_text(notice, self.name_of, lambda group: self.title_of(f"g:{group}"))
        self.say(text)
        kind = event.notice.kind
        if "friend" in kind or "invit" in kind:
            self.load_requests()
        if "friend_added" in kind or "invit" in kind or "group" in kind:
            self.load_conversations()

    # Conversations -------------------------------------------------------------------------------------

    @work(group="conversations")
    @_until_closed
    @_one_at_a_time
    async def load_conversations(self) -> None:
        known = set(self.rows)
        try:
            summaries = await self.client.conversations()
            self.groups = {group.id: group for group in await self.client.groups.list()}
        except IMError as exc:
            self.say(f"cannot list conversations: {exc}", error=True)
            if self.connection == "connected":  # else the next connection lists them
                self.set_timer(2.0, self.load_conversations)
            return
        self.listed = True
        await self.learn_names({summary.peer for summary in summaries if summary.peer is not None})
        view = self.query_one("#conversations", ListView)
        # The rows are replaced at once and mounted together: a message handled while this worker waits
        # finds its conversation's row, and never adds one that this list adds too. What messages handled
        # since the list was read changed is kept: a row that saw later seqs, a row they added.
        rows: dict[str, ConversationRow] = {}
        for summary in summaries:
            if summary.left:
                continue
            row = rows[summary.id] = self._row(summary)
            held = self.rows.get(summary.id)
            if held is not None and held.max_seq > row.max_seq:
                row.unread, row.mentioned, row.max_seq = held.unread, held.mentioned, held.max_seq
        for conversation, held in self.rows.items():
            if conversation not in rows and conversation not in known:
                rows[conversation] = held
        self.rows = rows
        await _to_the_end(view.clear())
        await _to_the_end(view.extend([ConversationItem(row) for row in self.rows.values()]))
        self.watch_presence()
        if self.current is not None:
            # Open already: its pane stays as it is (opening it again would reload it under a page of older
            # messages being loaded), and its row is highlighted again in the new list.
            self._highlight(self.current)
        elif self.open_first:
            wanted, self.open_first = self.open_first, None
            await self.open_target(wanted)
        elif self.rows:
            await self.open_conversation(next(iter(self.rows)))

    def _row(self, summary: ConversationSummary) -> ConversationRow:
        return ConversationRow(
            id=summary.id,
            title=self.title_of(summary.id, summary.peer),
            unread=summary.unread,
            mentioned=summary.mentioned,
            peer=summary.peer,
            max_seq=summary.max_seq,
            peer_read_seq=summary.peer_read_seq or 0,
            online=None if summary.peer is None else False,
        )

    def _add_row(self, conversation: str, peer: int | None) -> ConversationRow:
        if peer is None and conversation.startswith("d:"):
            first, second = (int(part) for part in conversation.split(":")[1:])
            peer = second if first == self.me else first
        row = ConversationRow(id=conversation, title=self.title_of(conversation, peer), peer=peer)
        row.online = None if peer is None else False
        self.rows[conversation] = row
        self.query_one("#conversations", ListView).insert(0, [ConversationItem(row)])
        return row

    async def _refresh_groups_if_needed(self, conversation: str) -> None:
        if conversation.startswith("g:") and int(conversation[2:]) not in self.groups:
            with contextlib.suppress(IMError):
                self.groups = {group.id: group for group in await self.client.groups.list()}

    def _item(self, conversation: str) -> ConversationItem | None:
        for item in self.query_one("#conversations", ListView).query(ConversationItem):
            if item.row.id == conversation:
                return item
        return None

    def _refresh_row(self, row: ConversationRow) -> None:
        item = self._item(row.id)
        if item is not None:
            item.refresh_label()

    def _move_to_top(self, row: ConversationRow) -> None:
        view = self.query_one("#conversations", ListView)
        item = self._item(row.id)
        if item is None:
            return
        if view.children and view.children[0] is item:
            item.refresh_label()
            return
        # Moved, not removed and mounted again: a removal happens later, and both rows would show
        # meanwhile.
        view.move_child(item, before=0)
        item.refresh_label()
        if self.current is not None:
            self._highlight(self.current)

    def _highlight(self, conversation: str) -> None:
        view = self.query_one("#conversations", ListView)
        for index, item in enumerate(view.query(ConversationItem)):
            if item.row.id == conversation:
                view.index = index
                return

    @work(exclusive=True, group="presence")
    @_until_closed
    async def watch_presence(self) -> None:
        for row in list(self.rows.values())[:30]:
            if row.peer is None:
                continue
            with contextlib.suppress(IMError):
                row.online = (await self.client.presence(row.peer)).online
                self._refresh_row(row)

    @on(ListView.Selected, "#conversations")
    async def _picked(self, event: ListView.Selected) -> None:
        if isinstance(event.item, ConversationItem):
            await self.open_conversation(event.item.row.id)

    def action_next_conversation(self) -> None:
        self._step(1)

    def action_previous_conversation(self) -> None:
        self._step(-1)

    def _step(self, delta: int) -> None:
        items = list(self.query_one("#conversations", ListView).query(ConversationItem))
        if not items:
            return
        ids = [item.row.id for item in items]
        index = ids.index(self.current) if self.current in ids else -delta
        self.run_worker(self.open_conversation(ids[(index + delta) % len(ids)]))

    async def open_target(self, target: str) -> None:
        """Open a conversation by its id, a username or the name of one of my groups."""
        if target in self.rows:
            await self.open_conversation(target)
            return
        for fresh in (False, True):  # a group made a moment ago may not be known yet: ask once more
            if fresh:
                with contextlib.suppress(IMError):
                    self.groups = {group.id: group for group in await self.client.groups.list()}
            for group in self.groups.values():
                if group.name.casefold() == target.casefold() or group.conversation == target:
                    await self.open_conversation(group.conversation)
                    return
        try:
            user = await self.client.get_user(int(target) if target.isdigit() else target)
        except (IMError, ValueError) as exc:
            self.say(f"no user or group {target!r}: {exc}", error=True)
            return
        self.names[user.id] = user.username
        await self.open_conversation(direct_conversation(self.me, user.id))

    async def open_conversation(self, conversation: str) -> None:
        """Show a conversation: its newest page, marked read; its members for a group."""
        self.current = conversation
        row = self.rows.get(conversation) or self._add_row(conversation, None)
        self._highlight(conversation)
        self.typing_until.clear()
        self._show_typing()
        self.title = printable(f"im chat · {row.title}")
        self.query_one("#input", Input).placeholder = printable(f"Message {row.title} (/help for commands)")
        chat = self.query_one(ChatView)
        await _to_the_end(chat.remove_children())
        self.messages = {}
        self.oldest = None
        self.has_older = False
        try:
            page = await self.client.history(conversation, limit=self.PAGE)
        except IMError as exc:
            if getattr(exc, "status", None) != 404:
                self.say(f"cannot load {row.title}: {exc}", error=True)
            page = None
        if page is not None:
            await self._prepend(page.messages)
            self.has_older = page.has_more
            if page.messages:
                self.mark_read(conversation, page.messages[-1].seq)
        chat.anchor()
        self.call_after_refresh(self._fill)
        row.unread = 0
        row.mentioned = False
        self._refresh_row(row)
        if row.peer is not None or conversation.startswith("d:"):
            self.load_commands(conversation)
        members = self.query_one("#members", Static)
        members.set_class(conversation.startswith("g:"), "active")
        if conversation.startswith("g:"):
            self.load_members()
        self.query_one("#input", Input).focus()

    # The message pane ----------------------------------------------------------------------------------

    def _render(self, message: Message) -> Text:
        row = self.rows.get(message.conversation)
        peer_read = row.peer_read_seq if row is not None and row.peer is not None else None
        return message_text(message, self.name_of, self.me, peer_read)

    def _visible(self, message: Message) -> bool:
        content = message.content
        return not (isinstance(content, SystemContent) and content.event in _HIDDEN_EVENTS)

    async def _append(self, message: Message) -> None:
        if message.seq in self.messages:
            return
        self.messages[message.seq] = message
        if self.oldest is None:
            self.oldest = message.seq
        chat = self.query_one(ChatView)
        later = [item for item in chat.items() if item.message.seq > message.seq]
        item = MessageItem(message, self._render(message))
        if later:
            await _to_the_end(chat.mount(item, before=later[0]))
        else:
            await _to_the_end(chat.mount(item))

    async def _prepend(self, messages: list[Message]) -> None:
        shown = [message for message in messages if self._visible(message) and message.seq not in self.messages]
        if messages:
            self.oldest = min(self.oldest or messages[0].seq, messages[0].seq)
        if not shown:
            return
        ids: set[int] = set()
        for message in shown:
            ids |= self._ids_in(message)
        await self.learn_names(ids)
        # A push handled while the names were asked for may have shown some of them already.
        shown = [message for message in shown if message.seq not in self.messages]
        chat = self.query_one(ChatView)
        items = [MessageItem(message, self._render(message)) for message in shown]
        for message in shown:
            self.messages[message.seq] = message
        existing = chat.items()
        if existing:
            await _to_the_end(chat.mount_all(items, before=existing[0]))
        else:
            await _to_the_end(chat.mount_all(items))

    @on(ChatView.NeedOlder)
    def _need_older(self) -> None:
        self.load_older()

    def _fill(self) -> None:
        """A pane not yet full has no scroll bar to pull: load older pages until it is (or none is left)."""
        if self.has_older and self.query_one(ChatView).max_scroll_y <= 0:
            self.load_older()

    @work(group="older")
    @_until_closed
    @_one_at_a_time
    async def load_older(self) -> None:
        """The page before the oldest message shown (the view keeps its place)."""
        conversation = self.current
        if conversation is None or not self.has_older or self.loading_older or self.oldest is None:
            return
        self.loading_older = True
        try:
            page = await self.client.history(conversation, before=self.oldest, limit=self.PAGE)
        except IMError as exc:
            self.say(f"cannot load older messages: {exc}", error=True)
            return
        finally:
            self.loading_older = False
        if conversation != self.current:
            return
        chat = self.query_one(ChatView)
        first = chat.items()[0] if chat.items() else None
        await self._prepend(page.messages)
        self.has_older = page.has_more
        if first is not None:
            chat.scroll_to_widget(first, top=True, animate=False)
        self.call_after_refresh(self._fill)

    async def _replace(self, conversation: str, seq: int) -> None:
        """Fetch a message again (edited or recalled) and re-render it where it is."""
        if conversation != self.current or seq not in self.messages:
            return
        try:
            page = await self.client.history(conversation, after=seq - 1, limit=1)
        except IMError:
            return
        for message in page.messages:
            if message.seq == seq:
                self.messages[seq] = message
                for item in self.query_one(ChatView).items():
                    if item.message.seq == seq:
                        item.message = message
                        item.update(self._render(message))

    def _rerender_mine(self) -> None:
        for item in self.query_one(ChatView).items():
            if item.message.sender == self.me:
                item.update(self._render(item.message))

    @work(group="read")
    @_until_closed
    async def mark_read(self, conversation: str, seq: int) -> None:
        with contextlib.suppress(IMError):
            await self.client.mark_read(conversation, seq)

    # Members and requests ------------------------------------------------------------------------------

    @work(exclusive=True, group="members")
    @_until_closed
    async def load_members(self) -> None:
        conversation = self.current
        if conversation is None or not conversation.startswith("g:"):
            return
        try:
            page = await self.client.groups.members(int(conversation[2:]), limit=200)
        except IMError as exc:
            self.query_one("#members", Static).update(Text(f"members: {exc}", style="dim"))
            return
        text = Text("Members\n", style="bold")
        self.member_names = {}
        for member in page.members:
            self.names[member.user.id] = member.user.username
            self.member_names[member.user.username] = member.user.id
            if member.nickname:
                self.member_names[member.nickname] = member.user.id
            text.append("● " if member.online else "○ ", style="green" if member.online else "dim")
            text.append(member.user.username)
            if member.role != "member":
                text.append(f" ({member.role})", style="dim")
            text.append("\n")
        if page.has_more:
            text.append("…", style="dim")
        self.query_one("#members", Static).update(printable_text(text))

    @work(group="requests")
    @_until_closed
    @_one_at_a_time
    async def load_requests(self) -> None:
        try:
            self.requests = await self.client.friends.requests("incoming")
        except IMError:
            self.requests = []
        self.invites = await self.invitations()
        view = self.query_one("#requests", ListView)
        await _to_the_end(view.clear())
        for request in self.requests:
            label = Text(f"{request.from_user.username} wants to be friends", style="yellow")
            label.append(f"\n  /accept {request.from_user.username}", style="dim")
            await _to_the_end(view.append(ListItem(Label(printable_text(label)))))
        for invite in self.invites:
            label = Text(f"{invite.inviter.username} invites you to {invite.group_name}", style="yellow")
            label.append(f"\n  /accept {invite.group_name}", style="dim")
            await _to_the_end(view.append(ListItem(Label(printable_text(label)))))
        if not self.requests and not self.invites:
            await _to_the_end(view.append(ListItem(Label(Text("none", style="dim")))))

    async def invitations(self) -> list[GroupInvitation]:
        """Pending invitations to groups sent to me."""
        try:
            return list(await self.client.groups.invitations())
        except IMError:
            return []

    async def accept_invitation(self, invite: GroupInvitation, accept: bool = True) -> None:
        """Join the group of an invitation (or decline it)."""
        if accept:
            group = await self.client.groups.accept(invite.id)
            self.groups[group.id] = group
            self.say(f"you joined {group.name}")
        else:
            await self.client.groups.decline(invite.id)
            self.say(f"invitation to {invite.group_name} declined")

    # The input -----------------------------------------------------------------------------------------

    def _peer_commands(self) -> list[BotCommand]:
        conversation = self.current
        if conversation is None or not conversation.startswith("d:"):
            return []
        low, high = (int(part) for part in conversation.split(":")[1:])
        return self.commands.get(high if low == self.me else low, [])

    @work(group="commands")
    @_until_closed
    async def load_commands(self, conversation: str) -> None:
        """Learn the commands the peer of a direct conversation declared (a bot's)."""
        low, high = (int(part) for part in conversation.split(":")[1:])
        peer = high if low == self.me else low
        if peer in self.commands:
            return
        with contextlib.suppress(IMError):
            self.commands[peer] = await self.client.commands(peer)

    @on(Input.Changed, "#input")
    def _typed(self, event: Input.Changed) -> None:
        if event.value == "/" and self._peer_commands():
            self.say("commands: " + "; ".join(commands_text(self._peer_commands())))
        if self.current and event.value and not event.value.startswith("/"):
            now = time.monotonic()
            if now - self._typing_sent > 3:
                self._typing_sent = now
                self.send_typing(self.current)

    @work(group="typing")
    @_until_closed
    async def send_typing(self, conversation: str) -> None:
        with contextlib.suppress(IMError):
            await self.client.typing(conversation, True)

    @on(Input.Submitted, "#input")
    async def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        if is_blank(text):
            return  # a blank line is not a message (the server refuses it too)
        if text.startswith("/"):
            await self.run_command(text)
            return
        if self.current is None:
            self.say("pick a conversation first (or /open NAME)", error=True)
            return
        self.send_text(self.current, text, None)

    async def run_command(self, line: str) -> None:
        """One ``/command`` from the input."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.say(f"cannot read that command: {exc}", error=True)
            return
        command, args = words[0].lower(), words[1:]
        needs_conversation = {"/reply", "/edit", "/recall", "/file", "/download", "/press"}
        if command in needs_conversation and self.current is None:
            self.say("pick a conversation first (or /open NAME)", error=True)
            return
        conversation = self.current or ""
        if command in ("/reply", "/edit") and len(args) >= 2 and args[0].lstrip("#").isdigit():
            parts = line.split(None, 2)  # splits at Unicode spaces too, where shlex does not: may hold no text
            rest = parts[2] if len(parts) == 3 else ""
            if is_blank(rest):
                self.say(f"nothing to {command[1:]}: the text is blank", error=True)
            elif command == "/reply":
                self.send_text(conversation, rest, int(args[0].lstrip("#")))
            else:
                self.edit_message(conversation, int(args[0].lstrip("#")), rest)
        elif command == "/recall" and len(args) == 1 and args[0].lstrip("#").isdigit():
            self.recall_message(conversation, int(args[0].lstrip("#")))
        elif command == "/file" and args:
            path, size = _local_file(args[0])
            if size is None:
                self.say(f"no file {path}", error=True)
            else:
                caption = " ".join(args[1:])
                self.send_file(conversation, path, size, None if is_blank(caption) else caption)
        elif command == "/download" and args and args[0].lstrip("#").isdigit():
            self.download_file(conversation, int(args[0].lstrip("#")), args[1] if len(args) > 1 else None)
        elif command == "/open" and args:
            await self.open_target(" ".join(args))
        elif command in ("/accept", "/decline") and args:
            self.answer_request(" ".join(args), command == "/accept")
        elif command == "/members":
            panel = self.query_one("#members", Static)
            panel.set_class(not panel.has_class("active"), "active")
            self.load_members()
        elif command in ("/quit", "/exit"):
            self.exit()
        elif command == "/press" and len(args) == 2 and args[0].lstrip("#").isdigit():
            self.press_button(int(args[0].lstrip("#")), args[1])
        elif command == "/help":
            declared = self._peer_commands()
            self.say(HELP + ("\nThis bot's commands: " + "; ".join(commands_text(declared)) if declared else ""))
        elif self.current is not None and (self._peer_commands() or "@" in words[0]):
            self.send_text(self.current, line, None)  # a bot's command (``/roll@helper`` in a group)
        else:
            self.say(f"not a command: {line.split()[0]} (try /help)", error=True)

    def _mentions(self, text: str) -> tuple[list[int], bool]:
        """``@name`` words that name a member (or a known user), and ``@all``."""
        mentions: list[int] = []
        everyone = False
        by_name = {name.casefold(): user for user, name in self.names.items()}
        by_name.update({name.casefold(): user for name, user in self.member_names.items()})
        for name in _MENTION.findall(text):
            if name.casefold() == "all":
                everyone = True
            elif name.casefold() in by_name and by_name[name.casefold()] not in mentions:
                mentions.append(by_name[name.casefold()])
        return mentions, everyone

    @work(group="send")
    @_until_closed
    async def send_text(self, conversation: str, text: str, reply_to: int | None) -> None:
        mentions, everyone = self._mentions(text)
        try:
            message = await self.client.send_text(
                conversation, text, reply_to=reply_to, mentions=mentions, mention_all=everyone
            )
        except IMError as exc:
            self.say(f"not sent: {exc}", error=True)
            self.query_one("#input", Input).value = text if reply_to is None else f"/reply {reply_to} {text}"
            return
        self.post_message(Incoming(message))  # the server does not push it back to this device

    def action_press_button(self, seq: int, choice: str) -> None:
        """A click on a button under a message."""
        self.press_button(seq, choice)

    @work(group="send")
    @_until_closed
    async def press_button(self, seq: int, choice: str) -> None:
        """Press a button (its number as shown, or its id) of message ``seq`` of the open conversation."""
        message = self.messages.get(seq)
        button = button_for(message, str(choice)) if message is not None else None
        if message is None or button is None:
            self.say(f"#{seq} has no button {choice}", error=True)
            return
        try:
            await self.client.press(message, button.id)
        except IMError as exc:
            self.say(f"not pressed: {exc}", error=True)
            return
        self.say(f'pressed "{button.label}" on #{seq}')

    @work(group="send")
    @_until_closed
    async def edit_message(self, conversation: str, seq: int, text: str) -> None:
        try:
            await self.client.edit(conversation, seq, text)
        except IMError as exc:
            self.say(f"not edited: {exc}", error=True)
            return
        await self._replace(conversation, seq)

    @work(group="send")
    @_until_closed
    async def recall_message(self, conversation: str, seq: int) -> None:
        try:
            await self.client.recall(conversation, seq)
        except IMError as exc:
            self.say(f"not recalled: {exc}", error=True)
            return
        await self._replace(conversation, seq)

    def _progress(self, total: int | None) -> Callable[[int, int | None], None]:
        bar = self.query_one("#transfer", ProgressBar)
        bar.add_class("active")
        bar.update(total=total, progress=0)

        def update(done: int, size: int | None) -> None:
            bar.update(total=size, progress=done)

        return update

    def _progress_done(self) -> None:
        self.query_one("#transfer", ProgressBar).remove_class("active")

    @work(group="transfer")
    @_until_closed
    async def send_file(self, conversation: str, path: Path, size: int, caption: str | None) -> None:
        progress = self._progress(size)
        try:
            message = await self.client.send_media(conversation, path, caption=caption, progress=progress)
        except (IMError, OSError) as exc:
            self.say(f"not sent: {exc}", error=True)
            return
        finally:
            self._progress_done()
        self.post_message(Incoming(message))

    @work(group="transfer")
    @_until_closed
    async def download_file(self, conversation: str, seq: int, path: str | None) -> None:
        message = self.messages.get(seq)
        if message is None or message.conversation != conversation:
            try:
                page = await self.client.history(conversation, after=seq - 1, limit=1)
            except IMError as exc:
                self.say(f"cannot find #{seq}: {exc}", error=True)
                return
            message = next((found for found in page.messages if found.seq == seq), None)
        content = media_content(message) if message is not None else None
        if message is None or content is None:
            self.say(f"#{seq} carries no file", error=True)
            return
        progress = self._progress(content.size)
        try:
            # The downloads folder is a directory (created if missing): it ends with a separator.
            target = path or os.path.join(self.downloads, "")
            saved = await self.client.download(message, target, progress=progress)
        except (IMError, OSError) as exc:
            self.say(f"download failed: {exc}", error=True)
            return
        finally:
            self._progress_done()
        self.say(f"saved {content.name} ({human_size(content.size)}) to {saved}")

    @work(group="requests-answer")
    @_until_closed
    async def answer_request(self, who: str, accept: bool) -> None:
        """Accept or decline a friend request (by the sender's name) or a group invitation (by group)."""
        for request in self.requests:
            if who.casefold() in (request.from_user.username, str(request.from_user.id), str(request.id)):
                try:
                    if accept:
                        await self.client.friends.accept(request.id)
                    else:
                        await self.client.friends.decline(request.id)
                except IMError as exc:
                    self.say(f"not answered: {exc}", error=True)
                    return
                self.say(f"you and {request.from_user.username} are friends now" if accept else "declined")
                self.load_requests()
                self.load_conversations()
                return
        for invite in self.invites:
            if who.casefold() in (invite.group_name.casefold(), str(invite.id), f"g:{invite.group_id}"):
                try:
                    await self.accept_invitation(invite, accept)
                except IMError as exc:
                    self.say(f"not answered: {exc}", error=True)
                    return
                self.load_requests()
                self.load_conversations()
                return
        self.say(f"no pending request from {who}", error=True)
