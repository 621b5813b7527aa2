"""`im cluster ...`: inspect and control the cluster (admins only; anyone else is refused: 403).

``nodes``, ``routes USER``, ``stats`` and ``top`` read the node and route registries through an API
node; ``kick`` ends device sessions as a logout does. Every command takes ``--json``.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from im_schema.admin import (
    ClusterNodes,
    ClusterNodesRequest,
    ClusterStatsRequest,
    DrainRequest,
    KickDeviceRequest,
    UserRoutesRequest,
)

from ..context import Context
from ..output import out, print_json

__all__ = ["app"]

app = typer.Typer(help="Inspect and control the cluster (admins only).", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
UserArg = Annotated[str, typer.Argument(metavar="USER", help="A username or numeric user id.")]


def _user(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def _nodes_table(nodes: ClusterNodes) -> Table:
    table = Table("node", "role", "address", "connections", "uptime", "version", "state", box=None, pad_edge=False)
    for node in nodes.nodes:
        state = node.state if node.state == "serving" else f"[yellow]{node.state}[/yellow]"
        table.add_row(
            node.node_id,
            node.role,
            node.address,
            str(node.connections),
            _uptime(node.uptime),
            node.version,
            state,
        )
    return table


@app.command()
def nodes(ctx: typer.Context, json_output: Json = False) -> None:
    """Live nodes: id, role, address, connections, uptime, version, serving or draining."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(ClusterNodesRequest())
    if json_output:
        print_json(found)
    else:
        out.print(_nodes_table(found))


@app.command()
def routes(ctx: typer.Context, user: UserArg, json_output: Json = False) -> None:
    """A user's connected devices and the gateway node holding each."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(UserRoutesRequest(user=_user(user)))
    if json_output:
        print_json(found)
        return
    if not found.routes:
        out.print(f"{found.user.username} has no connected device")
        return
    table = Table("device", "node", "node live", box=None, pad_edge=False)
    for route in found.routes:
        table.add_row(route.device_id, route.node_id or "", "yes" if route.live else "[red]no[/red]")
    out.print(table)


@app.command()
def stats(ctx: typer.Context, json_output: Json = False) -> None:
    """Cluster totals, and the NATS server's own figures when IM_NATS_MONITOR_URL is set on the API nodes."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(ClusterStatsRequest())
    if json_output:
        print_json(found)
        return
    table = Table("", "", box=None, pad_edge=False, show_header=False)
    for name in ("nodes", "api_nodes", "gateway_nodes", "connections", "routes", "users"):
        table.add_row(name.replace("_", " "), str(getattr(found, name)))
    for name, value in (found.nats or {}).items():
        table.add_row(f"nats {name}", str(value))
    out.print(table)


@app.command()
def kick(
    ctx: typer.Context,
    user: UserArg,
    device: Annotated[str | None, typer.Option("--device", "-d", help="Only this device (default: all).")] = None,
    json_output: Json = False,
) -> None:
    """End a user's device session(s) as a logout does: tokens refused, connections closed (4012)."""
    context: Context = ctx.obj
    with context.session() as client:
        result = client.request(KickDeviceRequest(user=_user(user), device=device))
    if json_output:
        print_json(result)
    else:
        out.print(f"kicked {user}: {', '.join(result.devices) or 'no device was logged in'}")


@app.command()
def drain(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(metavar="NODE", help="A gateway node id (see `im cluster nodes`).")],
    json_output: Json = False,
) -> None:
    """Drain a gateway: it takes no new clients, sends its clients elsewhere (4010) and stops once empty."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(DrainRequest(node=node))
    if json_output:
        print_json(found)
    else:
        out.print(f"{found.node_id}: {found.state}, {found.connections} connections left")


@app.command()
def top(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option("--interval", "-i", min=0.2, help="Seconds between refreshes.")] = 2.0,
    count: Annotated[int, typer.Option("--count", "-n", min=0, help="Stop after this many refreshes (0: never).")] = 0,
    json_output: Json = False,
) -> None:
    """A live view of the nodes, the most loaded first (Ctrl-C to stop; with --json, one line per refresh)."""
    context: Context = ctx.obj
    done = 0
    with context.session() as client:
        if json_output:
            while count == 0 or done < count:
                if done:
                    time.sleep(interval)
                print_json(client.request(ClusterNodesRequest()))
                done += 1
            return
        with Live(_nodes_table(client.request(ClusterNodesRequest())), console=out, auto_refresh=False) as live:
            done = 1
            try:
                while count == 0 or done < count:
                    time.sleep(interval)
                    live.update(_nodes_table(client.request(ClusterNodesRequest())), refresh=True)
                    done += 1
            except KeyboardInterrupt:
                pass
