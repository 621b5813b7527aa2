"""A real nats-server with the cluster's authentication, for tests.

The session server (``tests/conftest.py``) is shared by every test, each with its own random subject
prefix, so its permissions match any prefix (``prefix=None``) and gateways share one user. A test that
needs its own server (exact prefix, per-gateway users like ``im server up``, or one to stop and restart)
starts a :class:`PrivateNats`::

    server = PrivateNats(tmp_path / "nats", prefix="p1", gateways=["gw-1"]).start()
    api_settings = Settings(**server.settings("api"), subject_prefix="p1", ...)
    server.stop(); server.start()       # same port, same JetStream store, same users
    server.close()

Besides the role users there is an ``observer`` with every permission, for test code that watches
subjects or cleans buckets up; it exists only in test servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from im_server.cluster.credentials import ClusterCredentials
from im_server.cluster.natsbin import NatsClusterConfig, free_port, start_nats_server

__all__ = ["NatsCluster", "PrivateNats"]


class PrivateNats:
    """A nats-server of the test's own, with users ``api``, ``admin``, the gateways and ``observer``.

    ``prefix=None`` allows any subject prefix (and one shared ``gateway`` user unless ``gateways`` names
    per-node users); a prefix makes the permissions exact, as ``im server up`` writes them.
    """

    def __init__(self, directory: Path, *, prefix: str | None = None, gateways: Sequence[str] | None = None) -> None:
        self.directory = directory
        self.prefix = prefix
        self.credentials = ClusterCredentials.load_or_create(directory / "credentials", gateways)
        self._observer_password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateNats:
        """Start (or start again, on the same port and store)."""
        observer = {"user": "observer", "password": self._observer_password}
        self.process, _ = start_nats_server(
            self.directory,
            port=self.port,
            log_file=self.directory / "nats.log",
            authorization=self.credentials.authorization(self.prefix, extra=[observer]),
        )
        return self

    def stop(self) -> None:
        """Stop the server (clients start reconnecting)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    close = stop

    def settings(self, user: str, node_id: str | None = None) -> dict[str, Any]:
        """URL and credentials of a role user (``api``, ``admin``, ``gateway``) or of a gateway by node id.

        ``settings("gateway", "gw-1")`` is gw-1's own user if there is one, else the shared gateway user.
        """
        if user == "gateway" and node_id is not None and node_id in self.credentials.users:
            user = node_id
        return {"nats_url": self.url, **self.credentials.settings(user)}

    def env(self, user: str, node_id: str | None = None) -> dict[str, str]:
        """:meth:`settings` as ``IM_*`` variables, for child processes."""
        return {f"IM_{key.upper()}": str(value) for key, value in self.settings(user, node_id).items()}

    async def connect(self, user: str | None = None, **options: Any) -> NATS:
        """A raw connection as ``user`` (a role user, or the all-powerful observer when ``None``)."""
        if user is None:
            return await nats.connect(self.url, user="observer", password=self._observer_password, **options)
        seed = self.credentials.settings(user)["nats_nkey_seed_file"]
        return await nats.connect(self.url, nkeys_seed=str(seed), **options)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self.process is not None and self.process.poll() is None:
                self.process.kill()


class NatsCluster:
    """Three (or ``size``) nats-servers clustered on loopback, JetStream replicated, one set of users.

    It stands in for :class:`PrivateNats` wherever a test cluster takes one: :meth:`settings` gives a
    role's credentials with ``nats_url`` listing every server, the server ``first`` first (a node then
    connects to that one and fails over to the others in turn)::

        servers = NatsCluster(tmp_path / "nats").start()
        api = Settings(**servers.settings("api", first=0), nats_replicas=3, ...)
        servers.stop(0)          # clients of server 0 move to 1 and 2; R3 buckets keep their quorum
        servers.start(0)         # back, same port, store and name
    """

    def __init__(self, directory: Path, *, size: int = 3, prefix: str | None = None) -> None:
        self.directory = directory
        self.prefix = prefix
        self.credentials = ClusterCredentials.load_or_create(directory / "credentials", None)
        self._observer_password = secrets.token_urlsafe(16)
        self.ports = [free_port() for _ in range(size)]
        self.route_ports = [free_port() for _ in range(size)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        """Each server's client URL."""
        return [f"nats://127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """Every server, comma-separated (an ``IM_NATS_URL``)."""
        return ",".join(self.urls)

    def _config(self, index: int) -> NatsClusterConfig:
        routes = tuple(f"nats-route://127.0.0.1:{port}" for i, port in enumerate(self.route_ports) if i != index)
        return NatsClusterConfig(name=f"n{index}", port=self.route_ports[index], routes=routes)

    def start(self, index: int | None = None) -> NatsCluster:
        """Start every server (or one, again: same port, store and name)."""
        observer = {"user": "observer", "password": self._observer_password}
        for i in range(len(self.ports)) if index is None else [index]:
            directory = self.directory / f"n{i}"
            self.processes[i], _ = start_nats_server(
                directory,
                port=self.ports[i],
                log_file=self.directory / f"n{i}.log",
                authorization=self.credentials.authorization(self.prefix, extra=[observer]),
                cluster=self._config(i),
            )
        return self

    def stop(self, index: int, *, hard: bool = True) -> None:
        """Stop one server: SIGKILL (``hard``), else SIGTERM."""
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.kill() if hard else process.terminate()
            process.wait(10)
        self.processes[index] = None

    def close(self) -> None:
        """Stop every server."""
        for index in range(len(self.processes)):
            self.stop(index)

    def settings(self, user: str, node_id: str | None = None, *, first: int = 0) -> dict[str, Any]:
        """URLs and credentials of a role user, the server ``first`` listed first."""
        urls = self.urls[first:] + self.urls[:first]
        return {"nats_url": ",".join(urls), **self.credentials.settings(user)}

    async def connect(self, user: str | None = None, **options: Any) -> NATS:
        """A raw connection to the cluster as ``user`` (the observer when ``None``)."""
        if user is None:
            return await nats.connect(self.urls, user="observer", password=self._observer_password, **options)
        seed = self.credentials.settings(user)["nats_nkey_seed_file"]
        return await nats.connect(self.urls, nkeys_seed=str(seed), **options)

    async def wait_for_jetstream(self, timeout: float = 30) -> None:
        """Wait until JetStream can place a stream on every server (a fresh cluster elects a leader first)."""
        nc = await self.connect()
        try:
            js = nc.jetstream(timeout=5)
            probe = f"probe_{secrets.token_hex(4)}"
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        await js.add_stream(name=probe, subjects=[f"{probe}.>"], num_replicas=len(self.ports))
                        break
                    except Exception:
                        await asyncio.sleep(0.2)
            await js.delete_stream(probe)
        finally:
            await nc.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            for process in self.processes:
                if process is not None and process.poll() is None:
                    process.kill()
