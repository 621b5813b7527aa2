"""Chat: send, conversations, history, listen."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from im_schema.content import TextContent
from im_schema.models import Message
from im_sdk import Client, IMError

from ..context import Context, fail
from ..output import out, print_json, when

__all__ = ["conversations", "history", "listen", "send"]

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _text(message: Message) -> str:
    content = message.content
    if isinstance(content, TextContent):
        return content.text
    return f"[{content.kind}]"


def _line(context: Context, client: Client, message: Message) -> str:
    sender = context.name_of(client, message.sender)
    where = f"{when(message.sent_at)} {message.conversation}#{message.seq}"
    return f"[dim]{where}[/dim] [bold]{sender}[/bold]: {_text(message)}"


def send(
    ctx: typer.Context,
    to: Annotated[str, typer.Argument(help="A username, a user id or a conversation id (d:1:2, g:7).")],
    text: Annotated[str | None, typer.Argument(help="The message; read from stdin if omitted or '-'.")] = None,
    json_output: Json = False,
) -> None:
    """Send a text message (`echo hi | im send bob` works too)."""
    context: Context = ctx.obj
    if text is None or text == "-":
        text = sys.stdin.read().rstrip("\n")
    if not text:
        fail("nothing to send")
    with context.client() as client:
        try:
            message = client.send_text(int(to) if to.isdigit() else to, text)
        except IMError as exc:
            context.explain(exc)
    if json_output:
        print_json(message)
    else:
        out.print(f"sent to {message.conversation} as #{message.seq}")


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
                peer = context.name_of(client, summary.peer) if summary.peer else summary.id
                last = summary.last_message
                preview = ""
                if last is not None:
                    preview = f"{context.name_of(client, last.sender)}: {_text(last)}"[:60]
                unread = f"[bold]{summary.unread}[/bold]" if summary.unread else "0"
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
    json_output: Annotated[bool, typer.Option("--json", help="One JSON message per line.")] = False,
    start: Annotated[str, typer.Option(help="Where to begin: unread, latest (only new ones) or all.")] = "unread",
) -> None:
    """Print incoming messages live (Ctrl-C to stop); reconnects and catches up on its own."""
    context: Context = ctx.obj
    if start not in ("unread", "latest", "all"):
        fail("--start is one of unread, latest, all")
    with context.client() as client:
        try:
            for event in client.events(start=start):  # type: ignore[arg-type]  # checked above
                if json_output:
                    print_json(event.message)
                else:
                    out.print(_line(context, client, event.message))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except IMError as exc:
            context.explain(exc)
