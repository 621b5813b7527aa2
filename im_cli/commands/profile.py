"""`im profile ...`: the saved logins (profiles), which one is used by default, and forgetting one."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from im_sdk import Client, IMError

from ..context import Context, fail
from ..errors import ExitCode
from ..output import out, print_json

__all__ = ["app"]

app = typer.Typer(help="Saved logins: list them (the default), choose the default one, forget one.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The profile's name (see `im profile list`).")]


def _list(context: Context, json_output: bool) -> None:
    store = context.store
    current = store.current() or "default"
    rows = []
    for name in store.names():
        profile = store.get(name)
        rows.append(
            {
                "name": name,
                "server": profile.server,
                "username": profile.username,
                "device": profile.device,
                "logged_in": bool(profile.access_token),
                "default": name == current,
            }
        )
    if json_output:
        print_json(rows)
        return
    if not rows:
        out.print("no profiles yet; log in with: im login USERNAME (add --profile NAME for another one)")
        return
    table = Table("", "profile", "user", "server", "state", box=None, pad_edge=False)
    for row in rows:
        state = "logged in" if row["logged_in"] else "[dim]logged out[/dim]"
        table.add_row(
            "*" if row["default"] else "",
            escape(str(row["name"])),
            escape(str(row["username"] or "")),
            escape(str(row["server"])),
            state,
        )
    out.print(table)


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context, json_output: Json = False) -> None:
    """Saved logins (without a command: the list; * marks the default one)."""
    if ctx.invoked_subcommand is None:
        _list(ctx.obj, json_output)


@app.command("list")
def list_profiles(ctx: typer.Context, json_output: Json = False) -> None:
    """Saved logins: name, user, server, whether logged in; * marks the one used by default."""
    _list(ctx.obj, json_output)


@app.command()
def use(ctx: typer.Context, name: NameArg) -> None:
    """Use this profile when neither --profile nor IM_PROFILE says otherwise."""
    context: Context = ctx.obj
    if name not in context.store.names():
        fail(f"no profile {escape(name)!r}; log in with: im --profile {escape(name)} login USERNAME", ExitCode.USAGE)
    context.store.use(name)
    out.print(f"using profile {name!r} by default")


@app.command()
def remove(ctx: typer.Context, name: NameArg) -> None:
    """Forget a profile: log its device out (when the server answers), drop its tokens and sync cursors."""
    context: Context = ctx.obj
    saved = context.store.get(name)
    if saved.access_token and name in context.store.names():
        # End the server session too, when the server answers; the profile goes either way.
        with contextlib.suppress(IMError), Client(saved.server, access_token=saved.access_token) as client:
            client.logout()
    if not context.store.remove(name):
        fail(f"no profile {escape(name)!r}", ExitCode.USAGE)
    out.print(f"profile {name!r} removed")
