"""The local copy of the route and node registries, and delivery planning (pure, no I/O).

API nodes keep these tables current by watching the KV buckets; everything here is plain data so that
routing decisions are tested without NATS.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["NodeInfo", "NodeTable", "RouteTable", "plan_delivery", "ranked", "rendezvous"]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node says in its heartbeat."""

    node_id: str
    role: str
    url: str | None
    connections: int
    started_at: float
    version: str = ""
    """The software version the node runs."""
    state: str = "serving"
    """``serving``, or ``draining`` while it sends its clients elsewhere."""
    frames_in: float | None = None
    """Gateways: frames received from clients since the node started."""
    frames_out: float | None = None
    """Gateways: frames written to clients since the node started."""
    frames_in_rate: float | None = None
    """Gateways: frames received per second since the node's previous heartbeat."""
    frames_out_rate: float | None = None
    """Gateways: frames written per second since the node's previous heartbeat."""


class NodeTable:
    """Nodes seen in the registry; a node is live while its last heartbeat is younger than ``ttl``.

    A node is judged by its own heartbeats, never by the observer's trouble: while the observer is cut
    off from the registry (:meth:`freeze`), ages stop growing, so nobody is declared dead for a silence
    that was the observer's; once the registry is read again (:meth:`replace`), the table is exact.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}
        self._frozen_at: float | None = None

    def _now(self) -> float:
        now = self._clock()
        return now if self._frozen_at is None else min(now, self._frozen_at)

    def heartbeat(self, info: NodeInfo, age: float = 0.0) -> None:
        """Record a heartbeat written ``age`` seconds ago."""
        self._nodes[info.node_id] = (info, self._clock() - max(0.0, age))

    def remove(self, node_id: str) -> None:
        """Forget a node (it stopped, or its heartbeat expired in the registry)."""
        self._nodes.pop(node_id, None)

    def freeze(self) -> None:
        """The observer lost the registry: stop ageing heartbeats until :meth:`replace`."""
        if self._frozen_at is None:
            self._frozen_at = self._clock()

    def thaw(self) -> None:
        """The observer's copy caught up again without a fresh read: ages grow again."""
        self._frozen_at = None

    @property
    def frozen(self) -> bool:
        """Whether the table waits for a fresh copy of the registry."""
        return self._frozen_at is not None

    def replace(self, other: NodeTable) -> None:
        """Take the contents of a table freshly read from the registry, and age heartbeats again."""
        self._nodes = dict(other._nodes)
        self._frozen_at = None

    def beat_at(self, node_id: str) -> float | None:
        """When the node's last heartbeat was written (on this table's clock), if it is known."""
        entry = self._nodes.get(node_id)
        return None if entry is None else entry[1]

    def is_live(self, node_id: str) -> bool:
        """Whether the node's heartbeat is fresh."""
        entry = self._nodes.get(node_id)
        return entry is not None and self._now() - entry[1] < self.ttl

    def known(self) -> list[str]:
        """Every node id in the table, live or not."""
        return list(self._nodes)

    def live(self, role: str | None = None) -> list[NodeInfo]:
        """Live nodes, optionally of one role, sorted by id."""
        now = self._now()
        return sorted(
            (
                info
                for info, seen in self._nodes.values()
                if now - seen < self.ttl and (role is None or info.role == role)
            ),
            key=lambda info: info.node_id,
        )

    def all(self) -> list[tuple[NodeInfo, float]]:
        """Every known node with the seconds since its last heartbeat."""
        now = self._now()
        return [(info, now - seen) for info, seen in sorted(self._nodes.values(), key=lambda e: e[0].node_id)]


class RouteTable:
    """``user -> {device: node}``, as written by gateways into the route registry."""

    def __init__(self) -> None:
        self._routes: dict[int, dict[str, str]] = {}
        self._last_seen: dict[int, float] = {}
        self._node_ids: dict[str, str] = {}
        """One string per node id: every route to a node shares it (the registry gives each its own)."""

    def replace(self, other: RouteTable) -> None:
        """Take the contents of a table freshly read from the registry (in place: others hold this one)."""
        self._routes = other._routes
        self._node_ids = other._node_ids
        self._last_seen = {**self._last_seen, **other._last_seen}

    def on_node(self, node_id: str) -> list[tuple[int, str]]:
        """The devices routed to a node."""
        return [
            (user, device)
            for user, devices in self._routes.items()
            for device, node in devices.items()
            if node == node_id
        ]

    def users(self) -> list[int]:
        """Every user with a connected device."""
        return list(self._routes)

    def set(self, user_id: int, device_id: str, node_id: str) -> None:
        """A device connected to a node."""
        node_id = self._node_ids.setdefault(node_id, node_id)
        self._routes.setdefault(user_id, {})[device_id] = node_id

    def remove(self, user_id: int, device_id: str, at: float | None = None) -> None:
        """A device disconnected (``at``: when, in seconds since the epoch)."""
        devices = self._routes.get(user_id)
        if devices is not None:
            devices.pop(device_id, None)
            if not devices:
                del self._routes[user_id]
        if at is not None and at > self._last_seen.get(user_id, 0.0):
            self._last_seen[user_id] = at

    def last_seen(self, user_id: int) -> float | None:
        """When the user's last device disconnected (seconds since the epoch), if known."""
        return self._last_seen.get(user_id)

    def devices(self, user_id: int) -> dict[str, str]:
        """The user's connected devices and their nodes."""
        return self._routes.get(user_id, {})

    def __len__(self) -> int:
        return sum(len(devices) for devices in self._routes.values())


def plan_delivery(
    frames: Iterable[tuple[bytes, Iterable[int], tuple[int, str] | None]],
    routes: RouteTable,
    nodes: NodeTable,
    unrouted: dict[str, set[int]] | None = None,
) -> dict[str, list[tuple[bytes, list[tuple[int, str]]]]]:
    """Group the online devices of each frame's recipients by gateway node.

    ``frames`` holds ``(frame, recipient users, device to skip)``; the skipped device is the sender's
    own, which gets its answer directly. Devices routed to a node whose heartbeat expired are offline;
    when ``unrouted`` is given, their users are added to it under that node (so that they can be told
    to resync should the node turn out to be alive after all).
    Returns ``node -> [(frame, [(user, device), ...])]``: one publish per node carries them all.
    """
    plan: dict[str, list[tuple[bytes, list[tuple[int, str]]]]] = defaultdict(list)
    live: dict[str, bool] = {}
    for frame, users, skip in frames:
        per_node: dict[str, list[tuple[int, str]]] = {}
        for user in users:
            for device, node in routes.devices(user).items():
                if skip is not None and skip == (user, device):
                    continue
                alive = live.get(node)
                if alive is None:
                    alive = live[node] = nodes.is_live(node)
                if alive:
                    per_node.setdefault(node, []).append((user, device))
                elif unrouted is not None:
                    unrouted.setdefault(node, set()).add(user)
        for node, recipients in per_node.items():
            plan[node].append((frame, recipients))
    return dict(plan)


def rendezvous(key: str, candidates: Iterable[str]) -> str | None:
    """Highest-random-weight choice of a candidate for ``key``; stable as candidates come and go."""
    best: tuple[bytes, str] | None = None
    for candidate in candidates:
        weight = _weight(key, candidate)
        if best is None or weight > best[0]:
            best = (weight, candidate)
    return None if best is None else best[1]


def ranked(key: str, candidates: Iterable[str]) -> list[str]:
    """Every candidate, best first for ``key``: the first is :func:`rendezvous`'s choice, and each next one
    is the choice once all before it are gone."""
    return sorted(candidates, key=lambda candidate: _weight(key, candidate), reverse=True)


def _weight(key: str, candidate: str) -> bytes:
    return hashlib.blake2b(f"{candidate}\x00{key}".encode(), digest_size=8).digest()
