"""The ``im`` command: a terminal chat client and the server's launcher.

Global options pick the server (``--server`` / ``IM_SERVER``) and the profile (``--profile`` /
``IM_PROFILE``) whose tokens are used; ``im login`` fills a profile.
"""

from __future__ import annotations

from typing import Annotated

try:
    import typer
except ModuleNotFoundError as missing:  # the base install is the SDK alone: say what to add, not a traceback
    raise SystemExit("the im command needs the cli extra: pip install 'imkit[cli]'") from missing

from .commands import auth, chat, devices, friends, groups, server
from .context import Context

__all__ = ["app", "main"]

app = typer.Typer(
    name="im",
    help="Chat from the terminal and run the IM server.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    ctx: typer.Context,
    server_url: Annotated[
        str | None,
        typer.Option("--server", "-s", envvar="IM_SERVER", help="API URL (default: the profile's)."),
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", "-P", envvar="IM_PROFILE", help="Which saved login to use.")
    ] = "default",
) -> None:
    ctx.obj = Context(server=server_url, profile_name=profile)


app.add_typer(server.app, name="server")
app.add_typer(friends.app, name="friends")
app.add_typer(groups.app, name="groups")
app.add_typer(devices.app, name="devices")
app.command()(auth.register)
app.command()(auth.login)
app.command()(auth.logout)
app.command()(auth.whoami)
app.command()(chat.send)
app.command()(chat.conversations)
app.command()(chat.history)
app.command()(chat.download)
app.command()(chat.listen)
app.command()(chat.read)
app.command()(chat.recall)
app.command()(chat.edit)


def main() -> None:
    """Console script entry point."""
    app()
