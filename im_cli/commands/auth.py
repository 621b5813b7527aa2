"""Accounts: register, login, logout, whoami."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer
from rich.markup import escape

from im_sdk import Client, IMError

from ..context import Context, default_device, fail, live_device
from ..errors import ExitCode
from ..output import err, out, print_json
from ..render import plural

__all__ = ["login", "logout", "register", "whoami"]

PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin (for scripts)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail("no password on stdin", ExitCode.USAGE)
        return line
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return password


def register(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="3-32 characters: a-z 0-9 _ . -")],
    display_name: Annotated[str | None, typer.Option("--display-name", "-n", help="Shown to others.")] = None,
    password_stdin: PasswordStdin = False,
    json_output: Json = False,
) -> None:
    """Create an account (then log in with `im login`)."""
    context: Context = ctx.obj
    password = _password(password_stdin, confirm=True)
    with context.client(logged_in=False) as client:
        try:
            user = client.register(username, password, display_name=display_name)
        except IMError as exc:
            context.explain(exc)
    if json_output:
        print_json(user)
    else:
        out.print(f"registered [bold]{user.username}[/bold] (id {user.id}); now run: im login {user.username}")


def login(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Your username.")],
    device: Annotated[str | None, typer.Option("--device", "-d", help="A name for this device.")] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Log this device in and keep its tokens in the profile."""
    context: Context = ctx.obj
    password = _password(password_stdin, confirm=False)
    device = device or default_device()
    with context.client(logged_in=False) as client:
        try:
            session = client.login(username, password, device=device)
        except IMError as exc:
            context.explain(exc)
    # The live session of `im listen` and `im chat` (see Profile.live_device); without it they use
    # the main one, as before.
    with Client(context.server_url) as client:
        try:
            live = client.login(username, password, device=live_device(session.device_id))
        except IMError as exc:
            err.print(f"[yellow]no separate session for im listen and im chat ({escape(str(exc))})[/yellow]")
        else:
            context._remember_live(live)
    out.print(
        f"logged in as [bold]{session.user.username}[/bold] on device [bold]{session.device_id}[/bold]"
        f" (profile {context.profile_name!r}, {context.server_url})"
    )


def logout(
    ctx: typer.Context,
    all_devices: Annotated[
        bool, typer.Option("--all", help="Log out every device of the account, this one included.")
    ] = False,
) -> None:
    """End this device's session (or every device's) and forget its tokens."""
    context: Context = ctx.obj
    profile = context.profile
    if all_devices and not profile.access_token:
        fail(f"not logged in (profile {context.profile_name!r}); run: im login USERNAME", ExitCode.AUTHENTICATION)
    devices: list[str] = []
    if profile.live_access_token and not all_devices:
        with contextlib.suppress(IMError), context.client(live=True) as client:
            client.logout()
    if profile.access_token:
        with context.client() as client:
            try:
                if all_devices:
                    devices = client.devices.logout_all().devices
                else:
                    client.logout()
            except IMError as exc:
                if all_devices:
                    context.explain(exc)
                out.print(f"[yellow]the server did not confirm ({exc}); forgetting the tokens anyway[/yellow]")
    context.logged_out()
    if all_devices:
        out.print(
            f"logged out {plural(len(devices), 'device')}: {', '.join(devices)} (profile {context.profile_name!r})"
        )
    else:
        out.print(f"logged out (profile {context.profile_name!r})")


def whoami(ctx: typer.Context, json_output: Json = False) -> None:
    """Show the logged-in account and device."""
    context: Context = ctx.obj
    with context.client() as client:
        try:
            me = client.whoami()
        except IMError as exc:
            context.explain(exc)
    if json_output:
        print_json(me)
    else:
        user = me.user
        out.print(
            f"{user.username} (id {user.id}, {user.display_name}) on device {me.device_id} at {context.server_url}"
        )
