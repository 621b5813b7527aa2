"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..deps import NodeDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and readiness of this node")
async def healthz(node: NodeDep) -> dict[str, Any]:
    """``ok`` while the node can reach NATS; also reports the registries it mirrors."""
    return {
        "status": "ok" if node.bus.nc.is_connected else "degraded",
        "node_id": node.node_id,
        "nats": node.bus.nc.is_connected,
        "routes": len(node.mirror.routes),
        "gateways": [info.node_id for info in node.mirror.nodes.live("gateway")],
    }


@router.get("/metrics", summary="Prometheus metrics of this node", response_class=PlainTextResponse)
async def metrics(node: NodeDep) -> PlainTextResponse:
    """Commit latency and batch sizes, event loop lag, routes, live gateways."""
    return PlainTextResponse(node.metrics.render(), media_type="text/plain; version=0.0.4")
