"""`im admin ...`: accounts and bot accounts, for cluster admins (anyone else is refused: 403).

The first admin is made on the server machine with `im server create-admin NAME`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from im_schema.admin import (
    AdminUser,
    CreateBotRequest,
    DisableUserRequest,
    EnableUserRequest,
    ListBotsRequest,
    ListUsersRequest,
    MakeAdminRequest,
    RevokeBotRequest,
    ShowUserRequest,
)

from ..context import Context
from ..output import out, print_json, when

__all__ = ["app"]

app = typer.Typer(help="Cluster administration (admins only): users and bot accounts.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts: list, show, disable, enable, make-admin.", no_args_is_help=True)
bots_app = typer.Typer(help="Bot accounts: create (prints the token), list, revoke.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(bots_app, name="bots")

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
UserArg = Annotated[str, typer.Argument(metavar="USER", help="A username or numeric user id.")]


def _user(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _flags(user: AdminUser) -> str:
    flags = [name for name, on in (("admin", user.is_admin), ("bot", user.is_bot)) if on]
    if user.disabled_at is not None:
        flags.append("[red]disabled[/red]")
    return " ".join(flags)


def _table(users: list[AdminUser]) -> Table:
    table = Table("id", "username", "display name", "flags", "created", box=None, pad_edge=False)
    for user in users:
        table.add_row(str(user.id), user.username, escape(user.display_name), _flags(user), when(user.created_at))
    return table


def _show(user: AdminUser, json_output: bool, verb: str | None = None) -> None:
    if json_output:
        print_json(user)
    elif verb:
        flags = _flags(user)
        out.print(f"{verb} [bold]{user.username}[/bold] (id {user.id}{', flags: ' + flags if flags else ''})")
    else:
        out.print(_table([user]))


@users_app.command("list")
def list_users(
    ctx: typer.Context,
    after: Annotated[int, typer.Option("--after", min=0, help="Only users with a larger id (paging).")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 100,
    json_output: Json = False,
) -> None:
    """Users in id order, with their admin, bot and disabled flags."""
    context: Context = ctx.obj
    with context.session() as client:
        page = client.request(ListUsersRequest(after=after, limit=limit))
    if json_output:
        print_json(page)
        return
    out.print(_table(page.users))
    if page.next_after is not None:
        out.print(f"more: im admin users list --after {page.next_after}")


@users_app.command()
def show(ctx: typer.Context, user: UserArg, json_output: Json = False) -> None:
    """One user, with its admin, bot and disabled flags."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(ShowUserRequest(user=_user(user)))
    _show(found, json_output)


@users_app.command()
def disable(ctx: typer.Context, user: UserArg, json_output: Json = False) -> None:
    """Disable an account: it cannot log in, and its sessions end now (connections closed)."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(DisableUserRequest(user=_user(user)))
    _show(found, json_output, "disabled")


@users_app.command()
def enable(ctx: typer.Context, user: UserArg, json_output: Json = False) -> None:
    """Let a disabled account log in again."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(EnableUserRequest(user=_user(user)))
    _show(found, json_output, "enabled")


@users_app.command("make-admin")
def make_admin(ctx: typer.Context, user: UserArg, json_output: Json = False) -> None:
    """Give a user the admin role."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(MakeAdminRequest(user=_user(user)))
    _show(found, json_output, "made admin")


@bots_app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The bot's username.")],
    display_name: Annotated[str | None, typer.Option("--display-name", "-n", help="Shown to others.")] = None,
    json_output: Json = False,
) -> None:
    """Create a bot account and print its token (shown once: keep it secret)."""
    context: Context = ctx.obj
    with context.session() as client:
        created = client.request(CreateBotRequest(username=name, display_name=display_name))
    if json_output:
        print_json(created)
        return
    out.print(f"created bot [bold]{created.user.username}[/bold] (id {created.user.id}); its token (shown once):")
    out.print(created.token, markup=False)


@bots_app.command("list")
def list_bots(ctx: typer.Context, json_output: Json = False) -> None:
    """Every bot account."""
    context: Context = ctx.obj
    with context.session() as client:
        bots = client.request(ListBotsRequest())
    if json_output:
        print_json(bots)
    else:
        out.print(_table(bots.bots))


@bots_app.command()
def revoke(ctx: typer.Context, name: UserArg, json_output: Json = False) -> None:
    """Revoke a bot's tokens and end its sessions (the account and its messages stay)."""
    context: Context = ctx.obj
    with context.session() as client:
        result = client.request(RevokeBotRequest(bot=_user(name)))
    if json_output:
        print_json(result)
    else:
        ended = ", ".join(result.devices) or "none"
        out.print(f"revoked the tokens of {name}; sessions ended: {ended}")
