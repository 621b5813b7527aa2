"""`im cluster ...`: inspect and control the cluster (admins only; anyone else is refused: 403).

``nodes``, ``routes USER``, ``stats`` and ``top`` read the node and route registries through an API
node; ``kick`` ends device sessions as a logout does; ``trace CONVERSATION SEQ`` follows one message
through storage and the nodes' trace rings. Every command takes ``--json``.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from im_schema.admin import (
    ClusterNode,
    ClusterNodes,
    ClusterNodesRequest,
    ClusterStatsRequest,
    DrainRequest,
    KickDeviceRequest,
    MessageTrace,
    TraceMessageRequest,
    UserRoutesRequest,
)
from im_schema.ids import direct_conversation, is_conversation_id
from im_sdk import Client

from ..context import Context, fail, user_ref
from ..errors import ExitCode
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


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def _load(node: ClusterNode) -> tuple[float, int, str]:
    return (-((node.frames_in_per_s or 0.0) + (node.frames_out_per_s or 0.0)), -node.connections, node.node_id)


def _nodes_table(nodes: ClusterNodes, *, by_load: bool = False) -> Table:
    table = Table(
        "node",
        "role",
        "address",
        "connections",
        "in/s",
        "out/s",
        "uptime",
        "version",
        "state",
        box=None,
        pad_edge=False,
    )
    for node in sorted(nodes.nodes, key=_load) if by_load else nodes.nodes:
        state = node.state if node.state == "serving" else f"[yellow]{node.state}[/yellow]"
        table.add_row(
            node.node_id,
            node.role,
            node.address,
            str(node.connections),
            _rate(node.frames_in_per_s),
            _rate(node.frames_out_per_s),
            _uptime(node.uptime),
            node.version,
            state,
        )
    return table


@app.command()
def nodes(ctx: typer.Context, json_output: Json = False) -> None:
    """Live nodes: id, role, address, connections, WebSocket frames in/out per second (gateways: in/s,
    out/s), uptime, version, serving or draining."""
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
    """A live view of the nodes, the most loaded (frames per second, then connections) first (Ctrl-C to
    stop; with --json, one line per refresh)."""
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
        if not out.is_terminal:  # a pipe or a file: one table after the other, nothing redrawn
            while count == 0 or done < count:
                if done:
                    time.sleep(interval)
                    out.print()
                out.print(_nodes_table(client.request(ClusterNodesRequest()), by_load=True))
                done += 1
            return
        first = _nodes_table(client.request(ClusterNodesRequest()), by_load=True)
        with Live(first, console=out, auto_refresh=False) as live:
            done = 1
            # Ctrl-C ends it like any command: exit code 130 (the live view is left as last drawn).
            while count == 0 or done < count:
                time.sleep(interval)
                live.update(_nodes_table(client.request(ClusterNodesRequest()), by_load=True), refresh=True)
                done += 1


def _trace_conversation(context: Context, client: Client, text: str) -> str:
    """A conversation id from ``d:1:2`` / ``g:7``, ``d:USER:USER`` (names or ids, any order), or what
    other commands take (a username for my direct conversation with them, one of my groups)."""
    text = text.strip()
    if is_conversation_id(text):
        return text
    parts = text.split(":")
    if len(parts) == 3 and parts[0] == "d":
        first, second = (client.get_user(user_ref(part)).id for part in parts[1:])
        if first == second:
            fail("a direct conversation names two different users", ExitCode.USAGE)
        return direct_conversation(first, second)
    if len(parts) == 2 and parts[0] == "g" and parts[1].isascii() and parts[1].isdigit():
        return text  # not well formed (g:0, too long): the server says why
    return context.conversation_for(client, text)


def _at(value: object) -> str:
    return "" if value is None else str(value)


def _print_trace(trace: MessageTrace) -> None:
    out.print(
        f"[bold]{trace.conversation} #{trace.seq}[/bold] from user {trace.sender}, sent {trace.sent_at}"
        + (f" (client_msg_id {trace.client_msg_id})" if trace.client_msg_id else "")
    )
    out.print(f"stored by: {trace.stored_by or 'unknown (no API node remembers it)'}")
    table = Table("node", "role", "when", "what", box=None, pad_edge=False)
    for node in trace.nodes:
        if node.role == "api":
            if node.stored_at is not None:
                table.add_row(node.node_id, "api", _at(node.stored_at), "stored")
            for gateway, devices in sorted(node.published.items()):
                table.add_row(
                    node.node_id, "api", _at(node.published_at), f"published to {gateway} ({devices} devices)"
                )
        else:
            for push in node.pushes:
                table.add_row(
                    node.node_id, "gateway", _at(push.at), f"{push.kind} to user {push.user_id} {push.device_id}"
                )
            if node.pushed > len(node.pushes):
                table.add_row(node.node_id, "gateway", "", f"... {node.pushed - len(node.pushes)} more devices")
    out.print(table)
    if trace.aged_out:
        out.print(f"[yellow]aged out on {', '.join(trace.aged_out)}: those nodes forgot records since then[/yellow]")
    if trace.started_later:
        out.print(f"started after the message: {', '.join(trace.started_later)}")
    if trace.silent:
        out.print(f"[yellow]did not answer: {', '.join(trace.silent)}[/yellow]")
    more = trace.read_count - len(trace.read)
    out.print(f"read by {trace.read_count}: {', '.join(map(str, trace.read)) or '-'}" + (f" (+{more})" if more else ""))
    more = trace.unread_count - len(trace.unread)
    out.print(
        f"not read by {trace.unread_count}: {', '.join(map(str, trace.unread)) or '-'}"
        + (f" (+{more})" if more else "")
    )


@app.command()
def trace(
    ctx: typer.Context,
    conversation: Annotated[
        str,
        typer.Argument(
            metavar="CONVERSATION",
            help="d:1:2, g:7, d:alice:bob, or a username / group name as elsewhere (your own conversation).",
        ),
    ],
    seq: Annotated[int, typer.Argument(metavar="SEQ", min=1, help="The message's place in the conversation.")],
    json_output: Json = False,
) -> None:
    """One message's way: stored when and by which API node, published to which gateways, pushed to which
    devices, read by whom. Nodes remember their last IM_TRACE_CAPACITY messages; older records age out."""
    context: Context = ctx.obj
    with context.session() as client:
        found = client.request(
            TraceMessageRequest(conversation=_trace_conversation(context, client, conversation), seq=seq)
        )
    if json_output:
        print_json(found)
    else:
        _print_trace(found)
