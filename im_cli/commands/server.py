"""Running the server: `im server up` (an embedded cluster), `im server api`, `im server gateway`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..context import fail
from ..output import err, out

__all__ = ["app"]

app = typer.Typer(
    help="Run the server: a whole local cluster, or one node role for real deployments.", no_args_is_help=True
)

DEMO_PASSWORD = "demo-password"


def _require_server() -> None:
    try:
        import nats  # noqa: F401

        import im_server  # noqa: F401
    except ImportError:
        fail("the server is not installed; install it with: pip install 'imkit[server]'")


@app.command()
def up(
    gateways: Annotated[int, typer.Option("--gateways", "-g", min=1, max=64, help="Gateway processes.")] = 2,
    port: Annotated[int, typer.Option("--port", "-p", help="API port; gateways use the next ports.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="IM_DB_URL",
            help="sqlite:///path or postgresql://... (default: SQLite in the data dir).",
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option("--nats", envvar="IM_NATS_URL", help="Use this NATS instead of starting one."),
    ] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Database, NATS store, secret and logs.")] = Path(
        "im-data"
    ),
    demo: Annotated[bool, typer.Option("--demo", help="Create users alice and bob and a first message.")] = False,
) -> None:
    """Start a local cluster: nats-server, one API process and N gateway processes, supervised.

    Stops everything cleanly on Ctrl-C or SIGTERM.
    """
    _require_server()
    from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster

    plan = ClusterPlan(data_dir=data_dir, api_port=port, gateways=gateways, host=host, db_url=db, nats_url=nats_url)
    cluster = EmbeddedCluster(plan, on_event=lambda text: err.print(f"[dim]{text}[/dim]"))
    try:
        cluster.start()
    except BaseException as exc:
        cluster.stop()
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(130) from None
        fail(f"the cluster did not start: {exc} (logs in {data_dir / 'logs'})")
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_row("API", cluster.api_url, "(OpenAPI docs at /docs)")
    for index, url in enumerate(cluster.gateway_urls()):
        table.add_row(f"gateway gw-{index + 1}", url)
    table.add_row("NATS", cluster.nats_url or "")
    table.add_row("data", str(data_dir.resolve()))
    out.print("[bold green]cluster up[/bold green]")
    out.print(table)
    if demo:
        _demo(cluster.api_url)
    out.print("[dim]Ctrl-C stops the cluster.[/dim]")
    cluster.run()
    out.print("cluster stopped")


def _demo(url: str) -> None:
    from im_schema.social import SendFriendRequest
    from im_sdk import Client, ConflictError, UsernameTakenError

    with Client(url) as client:
        for name in ("alice", "bob"):
            with contextlib.suppress(UsernameTakenError):
                client.register(name, DEMO_PASSWORD, display_name=name.title())
        with Client(url) as bob:
            bob.login("bob", DEMO_PASSWORD, device="demo")
            with contextlib.suppress(ConflictError):
                bob.request(SendFriendRequest(to="alice", message="Hi, it's Bob"))
        client.login("alice", DEMO_PASSWORD, device="demo")
        with contextlib.suppress(ConflictError):
            client.request(SendFriendRequest(to="bob"))  # accepts Bob's request
        client.send_text("bob", "Hi Bob! This cluster works. Reply with: im send alice 'hello'")
    out.print(
        f"\n[bold]demo[/bold]: users alice and bob (password {DEMO_PASSWORD!r}); alice wrote to bob.\n"
        "In another terminal:\n"
        f"  echo {DEMO_PASSWORD} | im --profile bob login bob --password-stdin\n"
        "  im --profile bob listen\n"
        "and in a third:\n"
        f"  echo {DEMO_PASSWORD} | im --profile alice login alice --password-stdin\n"
        "  im --profile alice send bob 'hello from alice'\n"
    )


def _run_role(role: str) -> None:
    _require_server()
    from im_server.runner import main

    raise typer.Exit(main([role]))


@app.command()
def api() -> None:
    """Run one API node, configured by IM_* variables (IM_DB_URL, IM_NATS_URL, IM_SECRET_KEY, ...)."""
    _run_role("api")


@app.command()
def gateway() -> None:
    """Run one gateway node, configured by IM_* variables (IM_NATS_URL, IM_SECRET_KEY, IM_GATEWAY_PORT...)."""
    _run_role("gateway")
