"""Liveness and readiness: ``/healthz`` (503 with the degraded dependencies), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from ..deps import NodeDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and readiness of this node")
async def healthz(node: NodeDep) -> JSONResponse:
    """200 while the database takes writes, NATS is connected and the registry views are current; else 503.

    The body says which dependency is degraded (``degraded``), and what this node sees of the cluster.
    """
    report = await node.health()
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this node",
    response_class=PlainTextResponse,
    responses={
        401: {"description": "`IM_METRICS_TOKEN` is set and the bearer token is missing or wrong."},
        404: {"description": "No `IM_METRICS_TOKEN` is set: metrics are served on `IM_METRICS_PORT` alone, if at all."},
    },
)
async def metrics(node: NodeDep) -> PlainTextResponse:
    """Commit latency and batch sizes, event loop lag, routes, live gateways."""
    return PlainTextResponse(node.metrics.render(), media_type="text/plain; version=0.0.4")
