"""Running the server: `im server up` (an embedded cluster), `im server api`, `im server gateway`."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..context import fail, normalize_server
from ..errors import ExitCode
from ..output import err, out, print_json
from ..profiles import DEFAULT_SERVER
from . import access

__all__ = ["app"]

app = typer.Typer(
    help="Run the server: a whole local cluster, or one node role for real deployments.", no_args_is_help=True
)

app.add_typer(access.app, name="access")

DEMO_PASSWORD = "demo-password"


def _require_server() -> None:
    try:
        import nats  # noqa: F401

        import im_server  # noqa: F401
    except ImportError:
        fail("the server is not installed; install it with: pip install 'imkit[server]'")


def _lock(data_dir: Path) -> IO[str]:
    """Hold ``DATA_DIR/server.lock`` for the life of this process; exit 5 if another process holds it."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the secrets
    handle = (data_dir / "server.lock").open("a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        fail(
            escape(f"another `im server up` is running with the data dir {data_dir}{who}; stop it, or use --data-dir"),
            ExitCode.CLUSTER,
        )
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _check_ports(host: str, ports: list[int]) -> None:
    """Exit 5 with one line if any of ``ports`` cannot be listened on."""
    for port in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As the servers will bind: a port in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                reason = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
                first = ports[0]
                fail(
                    escape(
                        f"port {port} on {host} is {reason}; the cluster needs ports {first}-{ports[-1]}"
                        f" (choose others with --port)"
                    ),
                    ExitCode.CLUSTER,
                )


def _cli(server: str) -> str:
    """``im`` with ``--server`` when the server is not the default one."""
    return "im" if server == DEFAULT_SERVER else f"im --server {server}"


@app.command()
def up(
    gateways: Annotated[int, typer.Option("--gateways", "-g", min=1, max=64, help="Gateway processes.")] = 2,
    apis: Annotated[
        int,
        typer.Option(
            "--apis",
            "-a",
            min=1,
            max=16,
            help="API processes; more than one share the API port (SO_REUSEPORT, Linux). PostgreSQL recommended.",
        ),
    ] = 1,
    port: Annotated[
        int, typer.Option("--port", "-p", min=1, max=65000, help="API port; gateways use the next ports.")
    ] = 8080,
    host: Annotated[str, typer.Option(help="Address the API and gateways listen on.")] = "127.0.0.1",
    nats_host: Annotated[
        str,
        typer.Option(
            "--nats-host",
            help="Address nats-server listens on (loopback unless told otherwise; it always requires the "
            "credentials in the data dir).",
        ),
    ] = "127.0.0.1",
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            "--database-url",
            envvar="IM_DB_URL",
            help="sqlite:///path or postgresql://... (default: SQLite in the data dir).",
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option("--nats", envvar="IM_NATS_URL", help="Use this NATS instead of starting one."),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", help="Database, NATS store and credentials, uploads in progress, secret and logs (mode 0700)."
        ),
    ] = Path("im-data"),
    demo: Annotated[bool, typer.Option("--demo", help="Create users alice and bob and a first message.")] = False,
) -> None:
    """Start a local cluster: nats-server, M API processes and N gateway processes, supervised.

    One cluster per data dir (a second `im server up` there is refused), and its ports are checked
    before anything starts. Several API processes (--apis) share the API port: the kernel spreads
    connections over them, and gateways spread sends over them through NATS. Ctrl-C (exit code 130) or
    SIGTERM stops everything cleanly.
    """
    _require_server()
    if apis > 1 and not (sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")):
        fail("--apis above 1 needs Linux (the API processes share their port with SO_REUSEPORT)", ExitCode.USAGE)
    from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster

    class _Cluster(EmbeddedCluster):
        """Remembers which signal stopped it, for the exit code."""

        stopped_by: int | None = None

        def request_stop(self, *args: object) -> None:
            if args and isinstance(args[0], int):
                self.stopped_by = args[0]
            super().request_stop(*args)

    lock = _lock(data_dir)
    _check_ports(host, [port + offset for offset in range(gateways + 1)])
    # Uploads in progress stay with this cluster's data, not in a temporary folder every server shares.
    spool = {} if os.environ.get("IM_UPLOAD_DIR") else {"IM_UPLOAD_DIR": str((data_dir / "uploads").resolve())}
    plan = ClusterPlan(
        data_dir=data_dir,
        api_port=port,
        gateways=gateways,
        apis=apis,
        host=host,
        nats_host=nats_host,
        db_url=db,
        nats_url=nats_url,
        extra_env=spool,
    )
    cluster = _Cluster(plan, on_event=lambda text: err.print(f"[dim]{escape(text)}[/dim]"))
    try:
        cluster.start()
    except BaseException as exc:
        cluster.stop()
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        fail(escape(f"the cluster did not start: {exc} (logs in {data_dir / 'logs'})"), ExitCode.CLUSTER)
    table = Table(box=None, show_header=False, pad_edge=False)
    shared = f", {apis} processes: {', '.join(plan.api_ids())}" if apis > 1 else ""
    table.add_row("API", cluster.api_url, f"(OpenAPI docs at /docs{shared})")
    for index, url in enumerate(cluster.gateway_urls()):
        table.add_row(f"gateway gw-{index + 1}", url)
    table.add_row("NATS", cluster.nats_url or "")
    if cluster.credentials is not None:
        table.add_row("NATS users", str(cluster.credentials.directory.resolve()), "(admin.nk: operator tools)")
    table.add_row("data", str(data_dir.resolve()))
    out.print("[bold green]cluster up[/bold green]")
    out.print(table)
    server = normalize_server(cluster.api_url)
    if demo:
        try:
            _demo(server)
        except Exception as exc:  # the cluster runs on; the demo is a convenience
            err.print(f"[yellow]the demo could not be set up: {escape(str(exc))}[/yellow]")
    else:
        im = _cli(server)
        out.print(f"\nIn another terminal: {im} register NAME, then {im} login NAME, then im chat\n")
    out.print("[dim]Ctrl-C stops the cluster.[/dim]")
    try:
        cluster.run()
    finally:
        lock.close()
    out.print("cluster stopped")
    if cluster.stopped_by == signal.SIGINT:
        raise typer.Exit(ExitCode.INTERRUPTED)
    if cluster.stopped_by is not None:
        raise typer.Exit(128 + cluster.stopped_by)


def _demo(server: str) -> None:
    """Users alice and bob, friends, and one welcome message from alice: once per data dir."""
    from im_schema.ids import direct_conversation
    from im_schema.social import SendFriendRequest
    from im_sdk import Client, ConflictError, ConversationNotFoundError, UsernameTakenError

    im = _cli(server)
    with Client(server) as client:
        for name in ("alice", "bob"):
            with contextlib.suppress(UsernameTakenError):
                client.register(name, DEMO_PASSWORD, display_name=name.title())
        with Client(server) as bob:
            bob.login("bob", DEMO_PASSWORD, device="demo")
            with contextlib.suppress(ConflictError):
                bob.request(SendFriendRequest(to="alice", message="Hi, it's Bob"))
        alice = client.login("alice", DEMO_PASSWORD, device="demo").user.id
        with contextlib.suppress(ConflictError):
            client.request(SendFriendRequest(to="bob"))  # accepts Bob's request
        # Idempotent: a second run with the same data dir finds the conversation started.
        conversation = direct_conversation(alice, client.get_user("bob").id)
        try:
            started = bool(client.history(conversation, limit=1).messages)
        except ConversationNotFoundError:
            started = False
        if not started:
            client.send_text("bob", f"Hi Bob! This cluster works. Reply with: {im} --profile bob send alice 'hello'")
    out.print(
        f"\n[bold]demo[/bold]: users alice and bob (password {DEMO_PASSWORD!r}); alice wrote to bob.\n"
        "In another terminal, log in as bob and chat:\n"
        f"  echo {DEMO_PASSWORD} | {im} --profile bob login bob --password-stdin\n"
        f"  {im} --profile bob chat\n"
        "and in a third, as alice:\n"
        f"  echo {DEMO_PASSWORD} | {im} --profile alice login alice --password-stdin\n"
        f"  {im} --profile alice send bob 'hello from alice'\n"
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


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="The admin's username (created if it does not exist).")],
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="The data dir of `im server up` whose database to use.")
    ] = Path("im-data"),
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="IM_DB_URL", help="sqlite:///path or postgresql://... (default: the data dir's)."),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a cluster admin, on the server machine, straight in the database.

    Creates the account (asking for its password) or, if it exists, makes it an admin. Run it where the
    database is (it needs no running server); admins then make other admins with `im admin users make-admin`.
    """
    _require_server()
    import asyncio

    from im_server.services.admin import bootstrap_admin

    url = db or f"sqlite+aiosqlite:///{(data_dir / 'im.db').resolve()}"
    if db is None and not (data_dir / "im.db").exists():
        fail(escape(f"no database in {data_dir}; give --data-dir or --db"), ExitCode.USAGE)
    password: str | None = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n") or None
    elif sys.stdin.isatty():
        password = (
            typer.prompt(
                "Password (used only if the account is new)", hide_input=True, confirmation_prompt=True, default=""
            )
            or None
        )
    try:
        user, created = asyncio.run(bootstrap_admin(url, username, password))
    except ValueError as exc:
        fail(escape(str(exc)), ExitCode.USAGE)
    if json_output:
        print_json({"user": user.model_dump(mode="json"), "created": created})
    else:
        out.print(f"{'created' if created else 'made'} admin [bold]{user.username}[/bold] (id {user.id})")
