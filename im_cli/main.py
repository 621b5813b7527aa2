"""The ``im`` command: a terminal chat client and the server's launcher.

Global options pick the server (``--server`` / ``IM_SERVER``) and the profile (``--profile`` /
``IM_PROFILE``, else the one chosen with ``im profile use``) whose tokens are used; ``im login`` fills a
profile.

Every failure ends as one ``error: ...`` line on stderr and an exit code from :class:`ExitCode`
(:class:`ImGroup` converts what a command raises); ``IM_DEBUG=1`` lets unexpected errors show their
traceback.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

try:
    import typer
    from rich.markup import escape
    from typer.core import TyperGroup
except ModuleNotFoundError as missing:  # the base install is the SDK alone: say what to add, not a traceback
    raise SystemExit("the im command needs the cli extra: pip install 'imkit[cli]'") from missing

from .commands import admin, auth, bots, chat, cluster, devices, friends, groups, profile, server
from .context import Context
from .errors import ExitCode, one_line
from .helpformat import configure_help
from .output import err

__all__ = ["ImGroup", "app", "main"]

configure_help()


def _print_error(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)


class ImGroup(TyperGroup):
    """The top-level group: turns whatever a command raises into one line and an exit code."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except typer.TyperException as exc:
            _reraise_usage(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except typer.TyperException as exc:
            _reraise_usage(exc)
            raise
        except KeyboardInterrupt:
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as exc:
            server = getattr(ctx.obj, "server_url", None) if ctx.obj is not None else None
            found = one_line(exc, server)
            if found is None:
                if os.environ.get("IM_DEBUG"):
                    raise
                found = (f"unexpected {type(exc).__name__}: {exc} (IM_DEBUG=1 shows the details)", ExitCode.REFUSED)
            _print_error(escape(found[0]))
            raise typer.Exit(found[1]) from None


def _reraise_usage(exc: typer.TyperException) -> None:
    """A click usage error (exit code 2) as one line; help requested by giving no arguments is left alone."""
    if getattr(exc, "exit_code", None) != ExitCode.USAGE or type(exc).__name__ == "NoArgsIsHelpError":
        return
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "im"
    format_message = getattr(exc, "format_message", None)
    text = format_message() if callable(format_message) else str(exc)
    _print_error(f"{escape(text)} (see: {escape(command)} --help)")
    raise typer.Exit(ExitCode.USAGE) from None


app = typer.Typer(
    name="im",
    cls=ImGroup,
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
    profile_name: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-P",
            envvar="IM_PROFILE",
            help="Which saved login to use (default: the one chosen with `im profile use`, else 'default').",
        ),
    ] = None,
) -> None:
    ctx.obj = Context.create(server_url, profile_name)


app.add_typer(server.app, name="server")
app.add_typer(friends.app, name="friends")
app.add_typer(groups.app, name="groups")
app.add_typer(devices.app, name="devices")
app.add_typer(profile.app, name="profile")
app.add_typer(admin.app, name="admin")
app.add_typer(bots.app, name="bots")
app.add_typer(cluster.app, name="cluster")
app.command()(auth.register)
app.command()(auth.login)
app.command()(auth.logout)
app.command()(auth.whoami)
app.command()(chat.chat)
app.command()(chat.send)
app.command()(chat.conversations)
app.command()(chat.history)
app.command()(chat.download)
app.command()(chat.listen)
app.command()(chat.read)
app.command()(chat.recall)
app.command()(chat.edit)
app.command()(chat.press)


def main() -> None:
    """Console script entry point."""
    app()
