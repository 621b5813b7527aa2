"""NATS subject and bucket names, all under one prefix so several clusters can share a NATS."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Subjects", "parse_route_key", "route_key"]


@dataclass(frozen=True, slots=True)
class Subjects:
    """Names for one cluster."""

    prefix: str

    def gateway(self, node_id: str) -> str:
        """The one subject a gateway node subscribes to: deliveries for its connections."""
        return f"{self.prefix}.gw.{node_id}"

    @property
    def send(self) -> str:
        """Send frames from gateways to the message service (queue group ``api``)."""
        return f"{self.prefix}.svc.send"

    @property
    def sync(self) -> str:
        """Sync frames ("conversations since") from gateways to the API (queue group ``api``)."""
        return f"{self.prefix}.svc.sync"

    @property
    def ephemeral(self) -> str:
        """Typing and presence events from gateways to the API (queue group ``api``, no reply)."""
        return f"{self.prefix}.svc.ephemeral"

    @property
    def barrier(self) -> str:
        """Route barrier: every API node answers once its route table includes a given revision."""
        return f"{self.prefix}.api.barrier"

    @property
    def social_changed(self) -> str:
        """Event: the friends or blocks of the listed users changed (API nodes drop their caches)."""
        return f"{self.prefix}.evt.social"

    @property
    def members_changed(self) -> str:
        """Event: a group's membership changed (API nodes drop its roster)."""
        return f"{self.prefix}.evt.members"

    @property
    def revocation_barrier(self) -> str:
        """Revocation barrier: every API and gateway node answers once it refuses a given KV revision."""
        return f"{self.prefix}.sessions.barrier"

    @property
    def trace(self) -> str:
        """Trace request: every node answers with what its trace ring holds of one message (API nodes ask)."""
        return f"{self.prefix}.trace"

    @property
    def revoked_bucket(self) -> str:
        """KV with a TTL: session id -> revocation JSON (a logged-out device session)."""
        return f"{self.prefix}_revoked"

    @property
    def routes_bucket(self) -> str:
        """KV: ``<user>.<device>`` -> gateway node id."""
        return f"{self.prefix}_routes"

    @property
    def nodes_bucket(self) -> str:
        """KV with a TTL: node id -> heartbeat JSON."""
        return f"{self.prefix}_nodes"


def route_key(user_id: int, device_id: str) -> str:
    """The route registry key of one device."""
    return f"{user_id}.{device_id}"


def parse_route_key(key: str) -> tuple[int, str]:
    """``(user, device)`` from a route key."""
    user, _, device = key.partition(".")
    return int(user), device
