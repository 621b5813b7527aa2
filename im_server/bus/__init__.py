"""The bus: NATS subjects, the delivery envelope, registries and routing."""

from __future__ import annotations

from .codec import decode_delivery, encode_delivery
from .routes import NodeInfo, NodeTable, RouteTable, plan_delivery, rendezvous
from .subjects import Subjects, parse_route_key, route_key

__all__ = [
    "NodeInfo",
    "NodeTable",
    "RouteTable",
    "Subjects",
    "decode_delivery",
    "encode_delivery",
    "parse_route_key",
    "plan_delivery",
    "rendezvous",
    "route_key",
]
