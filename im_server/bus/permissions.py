"""Who may do what on the bus: the NATS users and permissions of the cluster's roles (pure, no I/O).

Three roles share one NATS account, each with only the subjects it needs:

- **api**: serves ``<prefix>.svc.send``, ``<prefix>.svc.sync`` and ``<prefix>.svc.ephemeral`` (queue
  group ``api``) and the route barrier; asks and answers trace requests ``<prefix>.trace``
  (:mod:`im_server.cluster.trace`);
  publishes deliveries (and the drain control message, :mod:`im_server.cluster.drain`) to every
  gateway subject ``<prefix>.gw.<node>``, cache events and the revocation barrier; creates the
  buckets, writes ``<prefix>_revoked`` and its own heartbeat, owns the object store ``<prefix>_files``;
  reads every registry and ``<prefix>_access``.
- **gateway**: publishes sends, syncs, typing and presence events, and route barrier requests; subscribes to
  its own node subject only (per-node users) and answers revocation barriers and trace requests
  (never asks: only API nodes may publish on ``<prefix>.trace``); writes routes and its own
  heartbeat; reads the node registry, the revocations and ``<prefix>_access``. It cannot publish to a
  gateway subject, write revocations, touch files or see another role's replies.
- **admin** (operator tools): reads the registries and manages the IP access-list bucket
  ``<prefix>_access``; nothing else.

Every role gets its own inbox prefix (:func:`inbox_prefix`), subscribes only below it, and answers
requests only through ``allow_responses`` (a reply to a message it received), so no role can read or
forge another's replies. :func:`permissions` builds the NATS permission map of a role; with
``prefix=None`` the subject prefix is a wildcard (a NATS shared by several clusters, as in the tests),
which cannot tell the buckets apart and is therefore weaker. :func:`authorization_config` renders the
``authorization`` block of a nats-server configuration for a list of :class:`NatsUser`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ROLES",
    "NatsUser",
    "Role",
    "authorization_config",
    "inbox_prefix",
    "permissions",
]

Role = Literal["api", "gateway", "admin"]
ROLES: tuple[Role, ...] = ("api", "gateway", "admin")

_INBOX_ROLE = {"api": "api", "gateway": "gw", "admin": "admin"}


def inbox_prefix(prefix: str, role: Role, node_id: str) -> str:
    """Where replies to one node's requests go: ``_INBOX.<prefix>.<api|gw|admin>.<node>``.

    ``node_id`` becomes one subject token: characters other than letters, digits, ``_`` and ``-`` turn
    into ``-`` (node ids already are such tokens; a tool's name may not be). ``*`` stays a wildcard.
    """
    token = node_id if node_id in ("*", "") else re.sub(r"[^A-Za-z0-9_-]", "-", node_id)
    return f"_INBOX.{prefix}.{_INBOX_ROLE[role]}.{token}"


@dataclass(frozen=True, slots=True)
class NatsUser:
    """One NATS user of a role, authenticated by an nkey; ``node_id`` pins a gateway user to its own
    subject, heartbeat and inbox (None: any gateway, the weaker shared user).

    The server's configuration holds only the public key; the seed is the secret a node connects with
    (``IM_NATS_NKEY_SEED_FILE``).
    """

    name: str
    role: Role
    seed: str
    node_id: str | None = None

    @classmethod
    def generate(cls, role: Role, node_id: str | None = None, *, name: str | None = None) -> NatsUser:
        """A user with a fresh random nkey (named after the node, else the role)."""
        import nkeys

        seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode()
        return cls(name or node_id or role, role, seed, node_id)

    @property
    def public_key(self) -> str:
        """The user's public nkey, as the server configuration names it."""
        import nkeys

        return str(nkeys.from_seed(self.seed.encode()).public_key.decode())


class _Names:
    """Subjects, streams and buckets of one prefix, or wildcards that match any prefix."""

    def __init__(self, prefix: str | None) -> None:
        self.exact = prefix is not None
        self.p = prefix if prefix is not None else "*"

    def bucket(self, name: str) -> str:
        # A bucket name is one subject token; a wildcard cannot match part of a token.
        return f"{self.p}_{name}" if self.exact else "*"

    def kv_stream(self, name: str) -> str:
        return f"KV_{self.bucket(name)}" if self.exact else "*"

    def obj_stream(self, name: str) -> str:
        return f"OBJ_{self.bucket(name)}" if self.exact else "*"


def _read_stream(stream: str) -> list[str]:
    """Look up a stream, watch it with an (ordered) consumer, get its messages."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def permissions(role: Role, prefix: str | None, node_id: str | None = None) -> dict[str, Any]:
    """The NATS permission map of ``role`` for one cluster prefix (``None``: any prefix).

    ``node_id`` narrows a gateway to its own subject, heartbeat key and inbox (per-node users); without
    it a gateway user may act as any gateway (one shared gateway user: the weaker option).
    """
    n = _Names(prefix)
    p = n.p
    node = node_id or "*"
    publish: list[str]
    subscribe: list[str]
    if role == "api":
        publish = [
            f"{p}.gw.*",
            f"{p}.evt.social",
            f"{p}.evt.members",
            f"{p}.sessions.barrier",
            f"{p}.trace",
            f"$KV.{n.bucket('revoked')}.>",
            f"$KV.{n.bucket('nodes')}.>",
            f"$KV.{n.bucket('routes')}.>",  # removes the routes of a gateway found dead (cluster/reaper.py)
            f"$O.{n.bucket('files')}.>",
            f"$JS.API.STREAM.PURGE.{n.obj_stream('files')}",
            "$JS.API.INFO",  # the blob store checks the account's JetStream limits
        ]
        for name in ("routes", "nodes", "revoked", "access"):
            publish += [f"$JS.API.STREAM.CREATE.{n.kv_stream(name)}", *_read_stream(n.kv_stream(name))]
        publish += [f"$JS.API.STREAM.CREATE.{n.obj_stream('files')}", *_read_stream(n.obj_stream("files"))]
        subscribe = [
            f"{p}.svc.send api",
            f"{p}.svc.sync api",
            f"{p}.svc.ephemeral api",
            f"{p}.api.barrier",
            f"{p}.evt.social",
            f"{p}.evt.members",
            f"{p}.sessions.barrier",
            f"{p}.trace",
            f"{inbox_prefix(p, 'api', '*')}.>",
        ]
    elif role == "gateway":
        publish = [
            f"{p}.svc.send",
            f"{p}.svc.sync",
            f"{p}.svc.ephemeral",
            f"{p}.api.barrier",
            f"$KV.{n.bucket('routes')}.>",
            f"$KV.{n.bucket('nodes')}.{node}",
        ]
        for name in ("routes", "nodes", "revoked", "access"):
            publish += _read_stream(n.kv_stream(name))
        subscribe = [
            f"{p}.gw.{node}",
            f"{p}.sessions.barrier",
            f"{p}.trace",
            f"{inbox_prefix(p, 'gateway', node)}.>",
        ]
    else:
        publish = [f"$KV.{n.bucket('access')}.>", f"$JS.API.STREAM.CREATE.{n.kv_stream('access')}"]
        for name in ("routes", "nodes", "revoked", "access"):
            publish += _read_stream(n.kv_stream(name))
        subscribe = [f"{inbox_prefix(p, 'admin', '*')}.>"]
    result: dict[str, Any] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if role != "admin":
        # Answers to requests it received (barriers, sends), and nothing else in other roles' inboxes.
        result["allow_responses"] = True
    return result


def authorization_config(users: Sequence[NatsUser], prefix: str | None, *, extra: Sequence[dict[str, Any]] = ()) -> str:
    """The ``authorization`` block of a nats-server configuration: these users and nobody else.

    ``extra`` are further user entries as nats-server takes them (``{"user", "password", "permissions"}``).
    """
    entries: list[dict[str, Any]] = [
        {"nkey": user.public_key, "permissions": permissions(user.role, prefix, user.node_id)} for user in users
    ]
    entries.extend(extra)
    # NATS configuration accepts JSON; quoted strings keep "$JS..." from reading as variables.
    return "authorization " + json.dumps({"users": entries}, indent=2) + "\n"
