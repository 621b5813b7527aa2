"""Draining a gateway node: the control message an API node sends it, on the node's own subject.

An admin asks an API node (``POST /v1/admin/cluster/drain``); the API node publishes :data:`DRAIN` to
the gateway's subject ``<prefix>.gw.<node>``, which only the ``api`` role may publish to
(:mod:`im_server.bus.permissions`), plainly, like a delivery: no reply subject and no headers, so that
a message JetStream was made to deliver there (which always carries a reply subject) is never taken
for it. The gateway then reports ``draining`` in its heartbeats (API nodes stop assigning devices to
it), refuses new connections, closes its clients with 4010 so they reconnect elsewhere and resync by
seq (nothing lost, nothing twice: sends are idempotent by ``client_msg_id``), and, once empty, sets
:attr:`GatewayNode.drained`, on which its process stops and leaves the registry.
"""

from __future__ import annotations

__all__ = ["DRAIN"]

DRAIN = b"drain"
"""The body of the drain control message (deliveries are JSON arrays and never equal it)."""
