"""Chat: send, conversations, history, listen."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from im_schema.content import SystemContent, TextContent
from im_schema.events import FriendAddedNotice, FriendRemovedNotice, FriendRequestNotice, JoinRequestNotice
from im_schema.models import Message
from im_sdk import Client, IMError
from im_sdk.events import EditEvent, MessageEvent, NoticeEvent, PresenceEvent, ReadEvent, RecallEvent, TypingEvent

from ..context import Context, fail
from ..output import out, print_json, when
from ..transfer import describe_media, human_size, media_content, progress_bar

__all__ = ["conversations", "download", "edit", "history", "listen", "read", "recall", "send"]

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
    return {"event": repr(event)}


def _describe_event(context: Context, client: Client, event: object, me: int) -> str | None:
    """A non-message event in words (``None``: nothing worth a line)."""
    if isinstance(event, NoticeEvent):
        return f"[magenta]{escape(describe_notice(event))}[/magenta]"
    if isinstance(event, RecallEvent):
        who = escape(context.name_of(client, event.by))
        return f"[dim]{event.conversation}#{event.seq}[/dim] [italic]{who} recalled a message[/italic]"
    if isinstance(event, EditEvent):
        who = escape(context.name_of(client, event.by))
        return f"[dim]{event.conversation}#{event.seq}[/dim] [italic]{who} edited:[/italic] {escape(event.text)}"
    if isinstance(event, ReadEvent):
        if event.user_id == me:
            return None  # another device of mine caught up
        who = escape(context.name_of(client, event.user_id))
        return f"[dim]{who} read {event.conversation} up to #{event.read_seq}[/dim]"
    if isinstance(event, TypingEvent):
        if not event.active:
            return None
        return f"[dim]{escape(context.name_of(client, event.user_id))} is typing in {event.conversation}...[/dim]"
    if isinstance(event, PresenceEvent):
        state = "online" if event.online else "offline"
        return f"[dim]{escape(context.name_of(client, event.user_id))} is {state}[/dim]"
    return None


def describe_notice(event: NoticeEvent) -> str:
    """A notice in words."""
    notice = event.notice
    if isinstance(notice, FriendRequestNotice):
        note = f": {notice.request.message}" if notice.request.message else ""
        return (
            f"{notice.request.from_user.username} wants to be your friend (im friends accept {notice.request.id}){note}"
        )
    if isinstance(notice, FriendAddedNotice):
        return f"you and {notice.user.username} are friends now"
    if isinstance(notice, FriendRemovedNotice):
        return f"user #{notice.user_id} is no longer your friend"
    if isinstance(notice, JoinRequestNotice):
        request = notice.request
        how = f"im groups approve {request.group_id} {request.id}"
        return f"{request.user.username} asks to join g:{request.group_id} ({how})"
    return f"notice: {notice.kind}"


_SYSTEM = {
    "group_created": "created the group",
    "group_updated": "changed the group settings",
    "group_dissolved": "dissolved the group",
    "members_joined": "added {users}",
    "member_left": "left",
    "member_kicked": "removed {user}",
    "announcement_set": "set the announcement: {text}",
    "owner_transferred": "made {user} the owner",
    "admin_added": "made {user} an admin",
    "admin_removed": "made {user} a member again",
    "member_muted": "muted {user} until {until}",
    "member_unmuted": "unmuted {user}",
    "nickname_set": "is now called {nickname}",
    "message_recalled": "recalled #{seq}",
    "message_edited": "edited #{seq}",
}


def describe_system(context: Context, client: Client, content: SystemContent) -> str:
    """A system message in words."""
    data = dict(content.data)
    if "user" in data:
        data["user"] = context.name_of(client, int(data["user"]))
    if "users" in data:
        data["users"] = ", ".join(context.name_of(client, int(user)) for user in data["users"])
    template = _SYSTEM.get(content.event)
    try:
        return template.format_map(data) if template else content.event
    except (KeyError, ValueError):
        return content.event


def _plain(context: Context, client: Client, message: Message) -> str:
    content = message.content
    if isinstance(content, TextContent):
        return content.text
    if isinstance(content, SystemContent):
        return describe_system(context, client, content)
    return describe_media(message) or f"[{content.kind}]"


def _text(context: Context, client: Client, message: Message) -> str:
    text = escape(_plain(context, client, message))
    return f"[italic]{text}[/italic]" if isinstance(message.content, SystemContent) else text


def _line(context: Context, client: Client, message: Message) -> str:
    sender = escape(context.name_of(client, message.sender))
    where = f"{when(message.sent_at)} {message.conversation}#{message.seq}"
    return f"[dim]{where}[/dim] [bold]{sender}[/bold]: {_text(context, client, message)}"


def send(
    ctx: typer.Context,
    to: Annotated[str, typer.Argument(help="A username, a user id or a conversation id (d:1:2, g:7).")],
    text: Annotated[
        str | None,
        typer.Argument(help="The message (with --file, its caption); read from stdin if omitted or '-'."),
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
    json_output: Json = False,
) -> None:
    """Send a text message (`echo hi | im send bob` works too), or a file with --file."""
    context: Context = ctx.obj
    if file is not None:
        _send_file(context, to, file, kind, None if text == "-" else text, json_output)
        return
    if kind is not None:
        fail("--kind goes with --file")
    if text is None or text == "-":
        text = sys.stdin.read().rstrip("\n")
    if not text:
        fail("nothing to send")
    with context.client() as client:
        try:
            mentioned = [client.get_user(int(name) if name.isdigit() else name).id for name in mention or []]
            message = client.send_text(
                int(to) if to.isdigit() else to, text, reply_to=reply, mentions=mentioned, mention_all=mention_all
            )
        except IMError as exc:
            context.explain(exc)
    if json_output:
        print_json(message)
    else:
        out.print(f"sent to {message.conversation} as #{message.seq}")


def _send_file(context: Context, to: str, path: Path, kind: str | None, caption: str | None, json_output: bool) -> None:
    if kind not in (None, "image", "file", "voice", "video"):
        fail("--kind is one of image, file, voice, video")
    with context.client() as client:
        try:
            with progress_bar(f"sending {path.name}", path.stat().st_size) as progress:
                message = client.send_media(
                    int(to) if to.isdigit() else to,
                    path,
                    kind=kind,  # type: ignore[arg-type]  # checked above
                    caption=caption or None,
                    progress=progress,
                )
        except IMError as exc:
            context.explain(exc)
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}")
    if json_output:
        print_json(message)
    else:
        out.print(f"sent {describe_media(message)} to {message.conversation} as #{message.seq}")


def download(
    ctx: typer.Context,
    conversation: Annotated[
        str, typer.Argument(metavar="CONVERSATION", help="A conversation id (d:1:2, g:7), a username or a user id.")
    ],
    seq: Annotated[int, typer.Argument(min=1, help="The message's number in the conversation (see im history).")],
    path: Annotated[
        Path | None, typer.Argument(help="Save as this file, or into this directory (default: here, by its name).")
    ] = None,
    thumbnail: Annotated[bool, typer.Option("--thumbnail", help="The thumbnail or poster instead.")] = False,
    json_output: Json = False,
) -> None:
    """Save the file of a message; an interrupted download resumes where it stopped."""
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
            with progress_bar(f"saving {content.name}", size) as progress:
                saved = client.download(message, path, thumbnail=thumbnail, progress=progress)
        except IMError as exc:
            context.explain(exc)
        except OSError as exc:
            fail(f"cannot write {path or '.'}: {exc.strerror or exc}")
    if json_output:
        print_json({"path": str(saved), "size": size, "name": content.name, "kind": content.kind})
    else:
        out.print(f"saved {content.kind} {content.name} ({human_size(size)}) to {saved}")


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
                peer = escape(context.name_of(client, summary.peer)) if summary.peer else summary.id
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
    target: Annotated[str, typer.Argument(metavar="TO", help="A username, a user id or a conversation id.")],
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
                out.print(_line(context, client, message))
            if not page.messages:
                out.print("no messages")
        except IMError as exc:
            context.explain(exc)


def listen(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help='One JSON object per line: a message, or {"notice": ...}.')
    ] = False,
    start: Annotated[str, typer.Option(help="Where to begin: unread, latest (only new ones) or all.")] = "unread",
) -> None:
    """Print incoming messages (and notices such as friend requests) live; reconnects and catches up."""
    context: Context = ctx.obj
    if start not in ("unread", "latest", "all"):
        fail("--start is one of unread, latest, all")
    with context.client() as client:
        try:
            me = context.me()
            for event in client.events(start=start):  # type: ignore[arg-type]  # checked above
                if isinstance(event, MessageEvent):
                    if json_output:
                        print_json(event.message)
                    else:
                        out.print(_line(context, client, event.message))
                elif json_output:
                    print_json(_event_json(event))
                else:
                    line = _describe_event(context, client, event, me)
                    if line:
                        out.print(line)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except IMError as exc:
            context.explain(exc)


def read(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TO", help="A username, a user id or a conversation id.")],
    seq: Annotated[int | None, typer.Argument(help="Read up to this seq (default: everything).")] = None,
    json_output: Json = False,
) -> None:
    """Mark a conversation read (on all my devices; my peer sees the read receipt)."""
    context: Context = ctx.obj
    with context.session() as client:
        conversation = context.conversation_for(client, target)
        state = client.mark_read(conversation, seq if seq is not None else 2**62)
    if json_output:
        print_json(state)
    else:
        out.print(f"{conversation} read up to #{state.read_seq}; {state.unread} unread")


def recall(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TO", help="A username, a user id or a conversation id.")],
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
    target: Annotated[str, typer.Argument(metavar="TO", help="A username, a user id or a conversation id.")],
    seq: Annotated[int, typer.Argument(help="The message's seq.")],
    text: Annotated[str, typer.Argument(help="The new text.")],
) -> None:
    """Replace the text of your message (within the edit window)."""
    context: Context = ctx.obj
    with context.session() as client:
        conversation = context.conversation_for(client, target)
        client.edit(conversation, seq, text)
    out.print(f"{conversation}#{seq} edited")
