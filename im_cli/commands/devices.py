"""`im devices ...`: the devices my account is logged in on, and logging them out."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from im_schema.models import Device

from ..context import Context, live_device
from ..output import out, print_json, when

__all__ = ["app"]

app = typer.Typer(help="My logged-in devices: list them (the default), log them out.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _row(device: Device, live: str | None) -> tuple[str, ...]:
    if device.current:
        name = f"[bold]{device.device_id}[/bold] (this one)"
    elif device.device_id == live:
        name = f"[bold]{device.device_id}[/bold] (this one, live)"
    else:
        name = device.device_id
    state = "[green]connected[/green]" if device.connected else ""
    return (name, state, when(device.created_at), when(device.last_seen_at))


def _list(context: Context, json_output: bool) -> None:
    with context.session() as client:
        devices = client.devices.list()
    if json_output:
        print_json(devices)
        return
    table = Table("device", "now", "logged in", "last seen", box=None, pad_edge=False)
    for device in devices:
        table.add_row(*_row(device, context.profile.live_device))
    out.print(table)


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context, json_output: Json = False) -> None:
    """My logged-in devices (without a command: the list)."""
    if ctx.invoked_subcommand is None:
        _list(ctx.obj, json_output)


@app.command("list")
def list_devices(ctx: typer.Context, json_output: Json = False) -> None:
    """My logged-in devices: which is this one, which are connected now, when each was last seen."""
    _list(ctx.obj, json_output)


@app.command()
def logout(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(metavar="DEVICE", help="The device id (see `im devices`).")],
    json_output: Json = False,
) -> None:
    """Log one device out: its tokens stop working at once and its connection is closed."""
    context: Context = ctx.obj
    with context.session() as client:
        # A CLI login's live session goes with it (first: this device's token may end with the second).
        paired = live_device(device)
        if not device.endswith("-live") and any(found.device_id == paired for found in client.devices.list()):
            client.devices.logout(paired)
        result = client.devices.logout(device)
    if result.current:
        context.logged_out()
    if json_output:
        print_json(result)
    elif result.current:
        out.print(f"logged out {device}, this device (profile {context.profile_name!r})")
    else:
        out.print(f"logged out {device}")
