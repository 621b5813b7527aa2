"""`im bots ...`: what bots offer (their declared commands)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ..context import Context, user_ref
from ..output import out, print_json
from ..render import commands_text

__all__ = ["app"]

app = typer.Typer(help="Bots: the commands they declare.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def commands(
    ctx: typer.Context,
    bot: Annotated[str, typer.Argument(metavar="BOT", help="The bot's username or user id.")],
    json_output: Json = False,
) -> None:
    """List the commands a bot declared (send one with: im send BOT "/command args")."""
    context: Context = ctx.obj
    with context.session() as client:
        declared = client.commands(user_ref(bot))
    if json_output:
        print_json(declared)
        return
    if not declared:
        out.print(escape(f"{bot} declares no commands"))
    for line in commands_text(declared):
        out.print(escape(line))
