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

import contextlib
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from im_server.cluster.credentials import ClusterCredentials
from im_server.cluster.natsbin import free_port, start_nats_server

__all__ = ["PrivateNats"]


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
