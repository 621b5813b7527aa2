"""The NATS users of a cluster run by ``im server up``, kept as private nkey seed files in the data dir.

One seed file per user, ``<data dir>/nats-credentials/<name>.nk`` (mode 0600, directory 0700): ``api``
for the API process, one per gateway (``gw-1``, ``gw-2``, ...: each may read only its own subject) and
``admin`` for operator tools. A node connects with ``IM_NATS_NKEY_SEED_FILE`` pointing at its file.
Seeds are kept across restarts (a shell that uses the admin seed stays valid); delete the directory to
issue new ones. The nats-server configuration holds only the public keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..bus.permissions import NatsUser, Role, authorization_config
from .natsbin import private_dir, private_file

__all__ = ["CREDENTIALS_DIR", "ClusterCredentials"]

CREDENTIALS_DIR = "nats-credentials"


@dataclass(frozen=True)
class ClusterCredentials:
    """The users of one cluster and where their seeds are."""

    directory: Path
    users: dict[str, NatsUser]

    @classmethod
    def load_or_create(cls, directory: Path, gateways: Iterable[str] | None) -> ClusterCredentials:
        """Users ``api``, ``admin`` and one per gateway id (or, with ``None``, one ``gateway`` user shared
        by all gateways: the weaker option); existing seed files are reused, missing ones created."""
        private_dir(directory)
        wanted: list[tuple[str, Role, str | None]] = [("api", "api", None), ("admin", "admin", None)]
        if gateways is None:
            wanted.append(("gateway", "gateway", None))
        else:
            wanted += [(node_id, "gateway", node_id) for node_id in gateways]
        users = {}
        for name, role, node_id in wanted:
            path = directory / f"{name}.nk"
            if path.exists():
                user = NatsUser(name, role, path.read_text().strip(), node_id)
            else:
                user = NatsUser.generate(role, node_id, name=name)
                private_file(path, user.seed + "\n", replace=False)
            users[name] = user
        return cls(directory, users)

    def seed_file(self, name: str) -> Path:
        """The seed file of one user."""
        if name not in self.users:
            raise KeyError(f"no NATS user {name!r}")
        return self.directory / f"{name}.nk"

    def settings(self, name: str) -> dict[str, Path]:
        """The settings a node of user ``name`` connects with."""
        return {"nats_nkey_seed_file": self.seed_file(name)}

    def env(self, name: str) -> dict[str, str]:
        """The same as ``IM_*`` environment variables."""
        return {"IM_NATS_NKEY_SEED_FILE": str(self.seed_file(name))}

    def authorization(self, prefix: str | None, *, extra: Iterable[dict[str, object]] = ()) -> str:
        """The nats-server ``authorization`` block for these users (``prefix=None``: any prefix)."""
        return authorization_config(list(self.users.values()), prefix, extra=list(extra))
