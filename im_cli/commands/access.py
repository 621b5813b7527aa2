"""`im server access`: the cluster's IP allow and deny lists (the NATS KV bucket ``<prefix>_access``).

Changes apply on every API and gateway node within moments, without a restart. The command connects to
NATS with the admin role (only it may write the bucket): the node settings (``IM_NATS_URL``,
``IM_SUBJECT_PREFIX``) and the admin's NATS credentials from the environment
(``IM_NATS_NKEY_SEED_FILE`` and friends), or else the admin seed that ``im server up`` wrote into
``./im-data/nats-credentials/admin.nk``. Without ``--nats`` or ``IM_NATS_URL``, the NATS of the
``im server up`` whose data dir is ``./im-data`` is used (its address is in ``im-data/nats/nats.conf``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from ..context import fail
from ..output import out, print_json

if TYPE_CHECKING:
    from im_server.cluster.access import AccessAdmin, AccessEntry

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(
    help="IP allow and deny lists (CIDR, IPv4 and IPv6), applied by every API and gateway node at once.",
    no_args_is_help=True,
)

NatsOption = Annotated[
    str | None, typer.Option("--nats", envvar="IM_NATS_URL", help="The cluster's NATS (as the nodes use it).")
]
PrefixOption = Annotated[
    str | None, typer.Option("--prefix", envvar="IM_SUBJECT_PREFIX", help="The cluster's subject prefix.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


_LISTEN = re.compile(r'^listen:\s*"?([^"\s]+)"?\s*$', re.MULTILINE)
"""The client address of a nats-server configuration (the top-level line; the cluster's is indented)."""


def _embedded_nats_url(data_dir: Path) -> str | None:
    """The NATS URL of the ``im server up`` whose data dir is ``data_dir`` (``None`` without one)."""
    try:
        found = _LISTEN.search((data_dir / "nats" / "nats.conf").read_text())
    except (OSError, UnicodeDecodeError):
        return None
    return f"nats://{found.group(1)}" if found else None


def _run(nats_url: str | None, prefix: str | None, action: Callable[[AccessAdmin], Awaitable[T]]) -> T:
    try:
        from pydantic import ValidationError

        from im_server.bus.nats import Bus
        from im_server.cluster.access import AccessAdmin
        from im_server.settings import Settings
    except ImportError:
        fail("the server is not installed; install it with: pip install 'imkit[server]'")
    overrides: dict[str, object] = {"nats_connect_timeout": 5.0}
    embedded_seed = Path("im-data") / "nats-credentials" / "admin.nk"
    identities = ("IM_NATS_USER", "IM_NATS_NKEY_SEED_FILE", "IM_NATS_CREDS_FILE")
    if not any(os.environ.get(name) for name in identities) and embedded_seed.is_file():
        overrides["nats_nkey_seed_file"] = embedded_seed
    nats_url = nats_url or _embedded_nats_url(Path("im-data"))
    if nats_url:
        overrides["nats_url"] = nats_url
    if prefix:
        overrides["subject_prefix"] = prefix
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]  # validated here; errors reported below
    except ValidationError as exc:
        fail(f"configuration error: {exc}")

    async def main() -> T:
        bus = Bus(settings, name="im-access-admin", role="admin")
        await bus.connect()
        try:
            return await action(AccessAdmin(bus))
        finally:
            await bus.close()

    # The bus logs its connection's life for a node's log ("disconnected" when it closes): noise here. The
    # level is put back afterwards, for a process that goes on to run more (a test session, a shell).
    server_log = logging.getLogger("im_server")
    level = server_log.level
    server_log.setLevel(logging.ERROR)
    try:
        return asyncio.run(main())
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot use the access lists on {escape(settings.nats_url)}: {escape(str(exc) or type(exc).__name__)}")
    finally:
        server_log.setLevel(level)


def _as_json(entry: AccessEntry) -> dict[str, object]:
    return {"list": entry.list, "cidr": str(entry.network), "note": entry.note, "at": entry.at}


def _put(name: Literal["allow", "deny"], cidr: str, note: str, nats_url: str | None, prefix: str | None) -> None:
    entry = _run(nats_url, prefix, lambda admin: admin.put(name, cidr, note))
    out.print(f"{name} {entry.network}" + (f" ({entry.note})" if entry.note else ""))


@app.command()
def allow(
    cidr: Annotated[str, typer.Argument(help="An address or network: 192.0.2.0/24, 2001:db8::/32.")],
    note: Annotated[str, typer.Option(help="Why (shown by list).")] = "",
    nats_url: NatsOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Add a network to the allow list (once it is not empty, only listed networks may connect)."""
    _put("allow", cidr, note, nats_url, prefix)


@app.command()
def deny(
    cidr: Annotated[str, typer.Argument(help="An address or network: 203.0.113.7, 198.51.100.0/24.")],
    note: Annotated[str, typer.Option(help="Why (shown by list).")] = "",
    nats_url: NatsOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Add a network to the deny list (refused everywhere but /healthz, even if also allowed)."""
    _put("deny", cidr, note, nats_url, prefix)


@app.command()
def remove(
    cidr: Annotated[str, typer.Argument(help="The network, as it was added.")],
    list_name: Annotated[
        str | None, typer.Option("--list", help="Only from this list: allow or deny (default: both).")
    ] = None,
    nats_url: NatsOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Take a network off the lists."""
    if list_name not in (None, "allow", "deny"):
        fail("--list must be allow or deny")
    name: Literal["allow", "deny"] | None = list_name  # type: ignore[assignment]  # checked just above
    removed = _run(nats_url, prefix, lambda admin: admin.remove(cidr, name))
    if not removed:
        fail(f"{cidr} is not on the {list_name or 'allow or deny'} list")
    out.print(f"removed {cidr} from {' and '.join(removed)}")


@app.command("list")
def list_(nats_url: NatsOption = None, prefix: PrefixOption = None, as_json: JsonOption = False) -> None:
    """Show both lists."""
    entries = _run(nats_url, prefix, lambda admin: admin.entries())
    if as_json:
        print_json([_as_json(entry) for entry in entries])
        return
    if not entries:
        out.print("no entries: every address may connect")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("list", "network", "since", "note"):
        table.add_column(column)
    for entry in entries:
        since = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M UTC") if entry.at else ""
        table.add_row(entry.list, str(entry.network), since, entry.note)
    out.print(table)
