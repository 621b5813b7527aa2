"""Chat: the full-screen client (im chat), and send, conversations, history, listen, read, recall, edit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.markup import escape
from rich.table import Table

from im_schema.content import MEDIA_KINDS, MediaKind, RecalledContent, SystemContent, is_blank
from im_schema.models import Message
from im_sdk import Client, IMError
from im_sdk._files import DownloadPlan
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
    UnknownEvent,
)

from ..context import Context, fail, user_ref
from ..errors import ExitCode
from ..output import err, out, print_json, when
from ..render import (
    body,
    button_for,
    buttons_text,
    connection_log,
    connection_lost,
    connection_up,
    mentions_text,
    notice_text,
    press_text,
    reply_text,
)
from ..streaming import StreamPrinter
from ..transfer import describe_media, human_size, media_content, progress_bar

__all__ = ["chat", "conversations", "download", "edit", "history", "listen", "press", "read", "recall", "send"]

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _event_json(event: object) -> dict[str, object]:
    """One line of ``im listen --json`` for what is not a message."""
    if isinstance(event, NoticeEvent):
        return {"notice": event.notice.model_dump(mode="json")}
    if isinstance(event, RecallEvent):
        return {"recall": {"conversation": event.conversation, "seq": event.seq, "by": event.by}}
    if isinstance(event, EditEvent):
        return {"edit": {"conversation": event.conversation, "seq": event.seq, "text": event.text, "by": event.by}}
    if isinstance(event, ReadEvent):
        return {"read": {"conversation": event.conversation, "user_id": event.user_id, "read_seq": event.read_seq}}
    if isinstance(event, TypingEvent):
        return {"typing": {"conversation": event.conversation, "user_id": event.user_id, "active": event.active}}
    if isinstance(event, PresenceEvent):
        seen = event.last_seen.isoformat() if event.last_seen else None
        return {"presence": {"user_id": event.user_id, "online": event.online, "last_seen": seen}}
    if isinstance(event, StreamEvent):
        fields = ("conversation", "seq", "sender", "text", "state")
        return {"stream": {name: getattr(event, name) for name in fields}}
    if isinstance(event, ButtonPressEvent):
        return {"press": event.press.model_dump(mode="json")}
    if isinstance(event, UnknownEvent):
        return {"unknown": event.raw}
    return {"event": repr(event)}


def _describe_event(context: Context, client: Client, event: object, me: int) -> str | None:
    """A non-message event in words, as markup (``None``: nothing worth a line)."""

    def name_of(user_id: int) -> str:
        return context.name_of(client, user_id)

    def where(conversation: str) -> str:
        return escape(context.conversation_name(client, conversation))

    if isinstance(event, NoticeEvent):
        text = notice_text(event.notice, name_of, lambda group: context.group_name(client, group))
        return f"[magenta]{escape(text)}[/magenta]"
    if isinstance(event, RecallEvent):
        who = escape(name_of(event.by))
        return f"[dim]{event.conversation}#{event.seq}[/dim] [italic]{who} recalled a message[/italic]"
    if isinstance(event, EditEvent):
        who = escape(name_of(event.by))
        return f"[dim]{event.conversation}#{event.seq}[/dim] [italic]{who} edited:[/italic] {escape(event.text)}"
    if isinstance(event, ReadEvent):
        if event.user_id == me:
            return None  # another device of mine caught up
        who = escape(name_of(event.user_id))
        return f"[dim]{who} read {where(event.conversation)} up to #{event.read_seq}[/dim]"
    if isinstance(event, TypingEvent):
        if not event.active:
            return None
        return f"[dim]{escape(name_of(event.user_id))} is typing in {where(event.conversation)}...[/dim]"
    if isinstance(event, PresenceEvent):
        state = "online" if event.online else "offline"
        return f"[dim]{escape(name_of(event.user_id))} is {state}[/dim]"
    if isinstance(event, ButtonPressEvent):
        return f"[magenta]{escape(press_text(event.press, name_of))}[/magenta]"
    return None


def _plain(context: Context, client: Client, message: Message) -> str:
    return body(message, lambda user_id: context.name_of(client, user_id))


def _line(context: Context, client: Client, message: Message, *, show_group: bool = True) -> str:
    """One message as a line of markup: time, place, sender, reply, text, mentions."""

    def name_of(user_id: int) -> str:
        return context.name_of(client, user_id)

    sender = escape(name_of(message.sender))
    where = f"{when(message.sent_at)} {message.conversation}#{message.seq}"
    if show_group and message.conversation.startswith("g:"):
        where += " " + escape(context.conversation_name(client, message.conversation)) + " ·"
    said = body(message, name_of)
    text = escape(said)
    if isinstance(message.content, (SystemContent, RecalledContent)):
        text = f"[italic]{text}[/italic]"
    if message.edited_at is not None:
        text += " [dim](edited)[/dim]"
    reply = reply_text(message, name_of)
    if reply:
        text = f"[cyan]{escape(reply)}[/cyan] {text}"
    mentions = mentions_text(message, name_of)
    if mentions and all(name in said for name in mentions.split()):
        mentions = None  # the text names them already
    if mentions:
        me = context.profile.user_id
        mine = message.mention_all or (me is not None and me in message.mentions)
        text += f" [{'bold red' if mine else 'cyan'}]{escape(mentions)}[/]"
    buttons = buttons_text(message)
    if buttons:
        text += f"\n    [reverse]{escape(buttons)}[/reverse]"
    return f"[dim]{where}[/dim] [bold]{sender}[/bold]: {text}"


def send(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Argument(help="A username, a user id, a conversation id (d:1:2, g:7) or the name of one of my groups."),
    ],
    text: Annotated[
        str | None,
        typer.Argument(
            help="The message (with --file, its caption: a blank one is left out); read from stdin if omitted or '-'."
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", exists=True, dir_okay=False, readable=True, help="Send this file; its kind is detected."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="With --file: send it as image, file, voice or video instead.")
    ] = None,
    reply: Annotated[int | None, typer.Option("--reply", "-r", help="Quote the message with this seq.")] = None,
    mention: Annotated[list[str] | None, typer.Option("--mention", "-m", help="Mention a member (repeatable).")] = None,
    mention_all: Annotated[bool, typer.Option("--all", help="Mention everyone (group owners and admins).")] = False,
    button: Annotated[
        list[str] | None,
        typer.Option("--button", "-b", metavar="ID=LABEL", help="A quick-reply button (repeatable, up to 8)."),
    ] = None,
    json_output: Json = False,
) -> None:
    """Send a text message (`echo hi | im send bob` works too), or a file with --file."""
    context: Context = ctx.obj
    if file is not None:
        # An empty or blank caption shows nothing: the file goes without one (the server refuses a blank one).
        caption = None if text is None or text == "-" or is_blank(text) else text
        _send_file(context, to, file, kind, caption, json_output)
        return
    if kind is not None:
        fail("--kind goes with --file", ExitCode.USAGE)
    buttons = [tuple(item.split("=", 1)) for item in button or []]
    if any(len(pair) != 2 for pair in buttons):
        fail("--button is ID=LABEL, e.g. --button yes=Yes", ExitCode.USAGE)
    if text is None or text == "-":
        text = sys.stdin.read().rstrip("\n")
    if is_blank(text):
        fail("nothing to send" if not text else "nothing to send: the text is blank", ExitCode.USAGE)
    with context.session() as client:
        mentioned = [client.get_user(user_ref(name)).id for name in mention or []]
        target = context.conversation_for(client, to)
        message = client.send_text(
            target,
            text,
            reply_to=reply,
            mentions=mentioned,
            mention_all=mention_all,
            buttons=[(pair[0], pair[1]) for pair in buttons],
        )
        where = context.conversation_name(client, message.conversation)
    if json_output:
        print_json(message)
    else:
        out.print(escape(f"sent to {where} ({message.conversation}) as #{message.seq}"))


def _send_file(context: Context, to: str, path: Path, kind: str | None, caption: str | None, json_output: bool) -> None:
    if kind is not None and kind not in MEDIA_KINDS:
        fail(f"--kind is one of {', '.join(get_args(MediaKind))}", ExitCode.USAGE)
    with context.client() as client:
        try:
            target = context.conversation_for(client, to)
            with progress_bar(f"sending {path.name}", path.stat().st_size) as progress:
                message = client.send_media(
                    target,
                    path,
                    kind=kind,  # type: ignore[arg-type]  # checked above
                    caption=caption,
                    progress=progress,
                )
        except IMError as exc:
            context.explain(exc)
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}")
    if json_output:
        print_json(message)
    else:
        out.print(f"sent {escape(describe_media(message) or '')} to {message.conversation} as #{message.seq}")


def download(
    ctx: typer.Context,
    conversation: Annotated[
        str, typer.Argument(metavar="CONVERSATION", help="A conversation id (d:1:2, g:7), a username or a user id.")
    ],
    seq: Annotated[int, typer.Argument(min=1, help="The message's number in the conversation (see im history).")],
    path: Annotated[
        str | None,
        typer.Argument(
            metavar="[PATH]",
            help="Save as this file, or into this directory (a path ending in / is one, created if missing);"
            " default: here, under the file's name.",
        ),
    ] = None,
    thumbnail: Annotated[bool, typer.Option("--thumbnail", help="The thumbnail or poster instead.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing file instead of saving as 'name (1).ext'.")
    ] = False,
    json_output: Json = False,
) -> None:
    """Save the file of a message; never overwrites (without --force); an interrupted download resumes."""
    context: Context = ctx.obj
    with context.client() as client:
        try:
            target = context.conversation_for(client, conversation)
            page = client.history(target, after=seq - 1, limit=1)
            message = next((found for found in page.messages if found.seq == seq), None)
            if message is None:
                fail(f"no message {target}#{seq}")
            content = media_content(message)
            if content is None:
                fail(f"message {target}#{seq} carries no file")
            size = content.size
            if thumbnail:
                preview = getattr(content, "thumbnail", None) or getattr(content, "poster", None)
                if preview is None:
                    fail(f"the {content.kind} of {target}#{seq} has no thumbnail")
                size = preview.size
            wanted = DownloadPlan.for_message(message, path, thumbnail=thumbnail, overwrite=True).target
            with progress_bar(f"saving {content.name}", size) as progress:
                saved = client.download(message, path, thumbnail=thumbnail, progress=progress)
            if force and saved != wanted:
                os.replace(saved, wanted)  # downloaded beside it, then swapped in whole
                saved = wanted
        except IMError as exc:
            context.explain(exc)
        except OSError as exc:
            fail(escape(f"cannot write {exc.filename or path or '.'}: {exc.strerror or exc}"))
    if json_output:
        print_json({"path": str(saved), "size": size, "name": content.name, "kind": content.kind})
    else:
        out.print(escape(f"saved {content.kind} {content.name} ({human_size(size)}) to {saved}"))


def conversations(ctx: typer.Context, json_output: Json = False) -> None:
    """List my conversations with unread counts, most recent first."""
    context: Context = ctx.obj
    with context.client() as client:
        try:
            summaries = client.conversations()
            if json_output:
                print_json(summaries)
                return
            table = Table("conversation", "with", "unread", "last message", "when", box=None, pad_edge=False)
            for summary in summaries:
                peer = escape(context.conversation_name(client, summary.id))
                last = summary.last_message
                preview = ""
                if last is not None:
                    preview = escape(f"{context.name_of(client, last.sender)}: {_plain(context, client, last)}"[:60])
                unread = f"[bold]{summary.unread}[/bold]" if summary.unread else "0"
                if summary.mentioned:
                    unread += " [red]@[/red]"
                table.add_row(summary.id, peer, unread, preview, when(summary.updated_at))
        except IMError as exc:
            context.explain(exc)
    if summaries:
        out.print(table)
    else:
        out.print("no conversations yet; start one with: im send USER TEXT")


def history(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="TO", help="A username, a user id, a conversation id (d:1:2, g:7) or the name of one of my groups."
        ),
    ],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="How many messages.")] = 20,
    before: Annotated[int | None, typer.Option(help="Only messages before this seq.")] = None,
    after: Annotated[int | None, typer.Option(help="Only messages after this seq.")] = None,
    json_output: Json = False,
) -> None:
    """Show the messages of a conversation, oldest first."""
    context: Context = ctx.obj
    with context.client() as client:
        try:
            conversation = context.conversation_for(client, target)
            page = client.history(conversation, after=after, before=before, limit=limit)
            if json_output:
                print_json(page.messages)
                return
            for message in page.messages:
                out.print(_line(context, client, message, show_group=False))
            if not page.messages:
                out.print("no messages")
        except IMError as exc:
            context.explain(exc)


class _ConnectionState(logging.Handler):
    """Prints the realtime connection's state changes on stderr (from the SDK's log and its reconnects)."""

    def __init__(self, server: str) -> None:
        super().__init__(logging.INFO)
        self.server = server
        self.state = "connecting"
        self.on_reconnect: Callable[[], None] = lambda: None
        """Run when a connection is up again after one was lost (before its catch-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        if connection_up(record):
            again = self.state == "disconnected"
            self.connected()
            if again:
                self.on_reconnect()
            return
        reason = connection_lost(record)
        if reason is not None:
            if self.state != "disconnected":
                err.print(
                    f"[yellow]disconnected from {escape(self.server)}[/yellow] [dim]({escape(reason)})[/dim];"
                    " reconnecting..."
                )
            self.state = "disconnected"

    def connected(self) -> None:
        if self.state == "connecting":
            err.print(f"[dim]connected to {escape(self.server)}; Ctrl-C stops[/dim]")
        elif self.state == "disconnected":
            err.print(f"[green]reconnected to {escape(self.server)}[/green]")
        self.state = "connected"


def listen(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help='One JSON object per line: a message, or {"notice": ...}.')
    ] = False,
    start: Annotated[str, typer.Option(help="Where to begin: unread, latest (only new ones) or all.")] = "unread",
) -> None:
    """Print incoming messages (and notices such as friend requests) live; reconnects and catches up.

    A streaming message (a bot's answer written as it is generated) is printed once, when it is final; on a
    terminal it grows in place instead. With --json every update is a line ({"stream": ...}).

    Connection state changes (connected, disconnected, reconnected) are printed on stderr.
    """
    context: Context = ctx.obj
    if start not in ("unread", "latest", "all"):
        fail("--start is one of unread, latest, all", ExitCode.USAGE)
    state = _ConnectionState(context.server_url)
    with connection_log(state), context.client(live=True) as client:
        streams = StreamPrinter(out, lambda message: _line(context, client, message))

        def fetch(conversation: str, seq: int) -> Message | None:
            found = client.history(conversation, after=seq - 1, limit=1).messages
            return found[0] if found and found[0].seq == seq else None

        def heal() -> None:
            with contextlib.suppress(IMError):  # the next reconnect tries again
                streams.heal(fetch)

        state.on_reconnect = heal

        try:
            me = context.me()
            # Closed on the way out, whatever ends the loop: a Ctrl-C while a line is printed closes the
            # connection here and now, not whenever the abandoned generator is collected.
            events = client.events(start=start)  # type: ignore[arg-type]  # checked above
            with contextlib.closing(events) as stream:
                for event in stream:
                    if isinstance(event, MessageEvent):
                        if json_output:
                            print_json(event.message)
                        elif not streams.message(event.message):
                            streams.interrupt()
                            out.print(_line(context, client, event.message))
                    elif json_output:
                        print_json(_event_json(event))
                    elif isinstance(event, StreamEvent):
                        streams.event(event, fetch)
                    else:
                        line = _describe_event(context, client, event, me)
                        if line:
                            streams.interrupt()
                            out.print(line)
        except KeyboardInterrupt:
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except IMError as exc:
            context.explain(exc)


def read(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="TO", help="A username, a user id, a conversation id (d:1:2, g:7) or the name of one of my groups."
        ),
    ],
    seq: Annotated[int | None, typer.Argument(help="Read up to this seq (default: everything).")] = None,
    json_output: Json = False,
) -> None:
    """Mark a conversation read (on all my devices; my peer sees the read receipt)."""
    context: Context = ctx.obj
    with context.session() as client:
        conversation = context.conversation_for(client, target)
        state = client.mark_read(conversation, seq if seq is not None else 2**62)
        where = context.conversation_name(client, conversation)
    if json_output:
        print_json(state)
    else:
        out.print(escape(f"{where} ({conversation}) read up to #{state.read_seq}; {state.unread} unread"))


def recall(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="TO", help="A username, a user id, a conversation id (d:1:2, g:7) or the name of one of my groups."
        ),
    ],
    seq: Annotated[int, typer.Argument(help="The message's seq.")],
) -> None:
    """Recall a message (yours within the recall window; any, as a group owner or admin)."""
    context: Context = ctx.obj
    with context.session() as client:
        conversation = context.conversation_for(client, target)
        client.recall(conversation, seq)
    out.print(f"{conversation}#{seq} recalled")


def edit(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="TO", help="A username, a user id, a conversation id (d:1:2, g:7) or the name of one of my groups."
        ),
    ],
    seq: Annotated[int, typer.Argument(help="The message's seq.")],
    text: Annotated[str, typer.Argument(help="The new text.")],
) -> None:
    """Replace the text of your message (within the edit window)."""
    context: Context = ctx.obj
    if is_blank(text):
        fail("the new text is blank (to take a message back, use im recall)", ExitCode.USAGE)
    with context.session() as client:
        conversation = context.conversation_for(client, target)
        client.edit(conversation, seq, text)
    out.print(f"{conversation}#{seq} edited")


def press(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="TO", help="A username, a user id, a conversation id (d:1:2, g:7) or the name of one of my groups."
        ),
    ],
    seq: Annotated[int, typer.Argument(help="The message's seq.")],
    button: Annotated[str, typer.Argument(help="The button's number as shown ([1] Yes: 1), or its id.")],
    json_output: Json = False,
) -> None:
    """Press a quick-reply button of a message; the press goes to its sender (usually a bot)."""
    context: Context = ctx.obj
    with context.session() as client:
        conversation = context.conversation_for(client, target)
        page = client.history(conversation, after=seq - 1, limit=1) if seq >= 1 else None
        message = page.messages[0] if page is not None and page.messages and page.messages[0].seq == seq else None
        if message is None:
            fail(escape(f"no message {conversation}#{seq}"))
        choice = button_for(message, button)
        if choice is None:
            shown = buttons_text(message)
            fail(escape(f"{conversation}#{seq} has no button {button!r}" + (f" ({shown})" if shown else "")))
        pressed = client.press(message, choice.id)
    if json_output:
        print_json(pressed)
    else:
        out.print(escape(f'pressed "{choice.label}" on {conversation}#{seq}'))


def chat(
    ctx: typer.Context,
    to: Annotated[
        str | None,
        typer.Argument(metavar="[TO]", help="Open this conversation first: a username, a group's name or an id."),
    ] = None,
) -> None:
    """The full-screen chat client: conversations, messages, files, requests (Ctrl-Q quits)."""
    context: Context = ctx.obj
    me, username = context.profile.user_id, context.profile.username
    client = context.async_client()
    if me is None or username is None:
        fail("not logged in; run: im login USERNAME", ExitCode.AUTHENTICATION)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("im chat needs a terminal; in scripts use im send, im listen and im history", ExitCode.USAGE)
    try:
        from ..tui.app import ChatApp
    except ImportError:
        fail("im chat needs Textual; install it with: pip install 'imkit[cli]'")

    async def run() -> None:
        async with client:
            await ChatApp(client, me=me, username=username, server=context.server_url, open_first=to).run_async()

    asyncio.run(run())
