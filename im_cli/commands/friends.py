"""`im friends ...`: friend requests, friends, remarks and blocks."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from im_schema.social import FriendInfo
from im_sdk import Client

from ..context import Context, fail, user_ref
from ..output import out, print_json, when

__all__ = ["app"]

app = typer.Typer(help="Friends, friend requests and blocks.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
UserArg = Annotated[str, typer.Argument(metavar="USER", help="A username or a user id.")]


def _ref(user: str) -> int | str:
    return user_ref(user)


def _friend_row(info: FriendInfo) -> tuple[str, ...]:
    state = "[green]online[/green]" if info.online else "offline"
    return (info.user.username, escape(info.remark or ""), escape(info.user.display_name), state, when(info.since))


@app.command()
def add(
    ctx: typer.Context,
    user: UserArg,
    message: Annotated[str, typer.Option("--message", "-m", help="A note with the request.")] = "",
    json_output: Json = False,
) -> None:
    """Send a friend request (if they asked you already, you are friends at once)."""
    context: Context = ctx.obj
    with context.session() as client:
        request = client.friends.request(_ref(user), message)
    if json_output:
        print_json(request)
    elif request.status == "accepted":
        out.print(f"you and {user} are friends now")
    else:
        out.print(f"request #{request.id} sent to {request.to_user.username}")


@app.command()
def requests(
    ctx: typer.Context,
    outgoing: Annotated[bool, typer.Option("--outgoing", help="Requests I sent, instead of those sent to me.")] = False,
    json_output: Json = False,
) -> None:
    """Pending friend requests."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.friends.requests("outgoing" if outgoing else "incoming")
    if json_output:
        print_json(found)
        return
    if not found:
        out.print("no pending requests")
        return
    table = Table("id", "from" if not outgoing else "to", "message", "when", box=None, pad_edge=False)
    for request in found:
        other = request.to_user if outgoing else request.from_user
        table.add_row(str(request.id), other.username, escape(request.message), when(request.created_at))
    out.print(table)


RequestArg = Annotated[
    str, typer.Argument(metavar="REQUEST", help="The request's id, or the username or id of who sent it.")
]


def _incoming(context: Context, client: Client, request: str) -> int:
    """A pending incoming request's id, from its id or its sender (a username, or a user id)."""
    pending = client.friends.requests("incoming")
    if request.isdigit() and any(found.id == int(request) for found in pending):
        return int(request)
    ref = user_ref(request)
    for found in pending:
        if ref in (found.from_user.id, found.from_user.username):
            return found.id
    if request.isdigit():
        return int(request)  # the server says what is wrong with it
    fail(escape(f"no pending friend request from {request}; see: im friends requests"))


@app.command()
def accept(ctx: typer.Context, request: RequestArg) -> None:
    """Accept a friend request."""
    context: Context = ctx.obj
    with context.session() as client:
        friend = client.friends.accept(_incoming(context, client, request))
    out.print(f"you and {friend.user.username} are friends now")


@app.command()
def decline(ctx: typer.Context, request: RequestArg) -> None:
    """Decline a friend request."""
    context: Context = ctx.obj
    with context.session() as client:
        request_id = _incoming(context, client, request)
        client.friends.decline(request_id)
    out.print(f"request #{request_id} declined")


@app.command("list")
def list_(ctx: typer.Context, json_output: Json = False) -> None:
    """My friends."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.friends.list()
    if json_output:
        print_json(found)
        return
    if not found:
        out.print("no friends yet; add one with: im friends add USER")
        return
    table = Table("user", "remark", "name", "state", "since", box=None, pad_edge=False)
    for info in found:
        table.add_row(*_friend_row(info))
    out.print(table)


@app.command()
def info(ctx: typer.Context, user: UserArg, json_output: Json = False) -> None:
    """A friend's profile, my remark and whether they are online."""
    context: Context = ctx.obj
    with context.session() as client:
        friend = client.friends.info(_ref(user))
    if json_output:
        print_json(friend)
        return
    profile = friend.user
    out.print(f"[bold]{profile.display_name}[/bold] ({profile.username}, id {profile.id})")
    if friend.remark:
        out.print(f"remark: {friend.remark}")
    if profile.bio:
        out.print(f"bio: {profile.bio}")
    out.print(f"{'online' if friend.online else 'offline'}; friends since {when(friend.since)}")


@app.command()
def remark(
    ctx: typer.Context, user: UserArg, text: Annotated[str, typer.Argument(help="The remark; '' clears it.")]
) -> None:
    """Set my private remark (alias) for a friend."""
    context: Context = ctx.obj
    with context.session() as client:
        client.friends.remark(_ref(user), text)
    out.print(f"remark for {user} {'set' if text else 'cleared'}")


@app.command()
def remove(ctx: typer.Context, user: UserArg) -> None:
    """End a friendship (for both sides)."""
    context: Context = ctx.obj
    with context.session() as client:
        client.friends.remove(_ref(user))
    out.print(f"{user} is no longer your friend")


@app.command()
def block(ctx: typer.Context, user: UserArg) -> None:
    """Block a user: they cannot message or befriend you, nor see your presence."""
    context: Context = ctx.obj
    with context.session() as client:
        client.friends.block(_ref(user))
    out.print(f"{user} blocked")


@app.command()
def unblock(ctx: typer.Context, user: UserArg) -> None:
    """Lift a block."""
    context: Context = ctx.obj
    with context.session() as client:
        client.friends.unblock(_ref(user))
    out.print(f"{user} unblocked")


@app.command()
def blocked(ctx: typer.Context, json_output: Json = False) -> None:
    """The users I blocked."""
    context: Context = ctx.obj
    with context.session() as client:
        users = client.friends.blocked()
    if json_output:
        print_json(users)
    else:
        out.print("\n".join(user.username for user in users) or "nobody blocked")
