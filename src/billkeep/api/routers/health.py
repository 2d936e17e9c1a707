"""Operations endpoints, without authentication: /healthz and /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from billkeep.api import metrics
from billkeep.api.deps import Engine, json_response
from billkeep.api.models import Health
from billkeep.api.openapi import schema_ref

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=None,
    summary="Liveness and database reachability (no auth)",
    responses={
        200: {"description": "Up", "content": {"application/json": {"schema": schema_ref(Health)}}},
        503: {
            "description": "The database is unreachable",
            "content": {"application/json": {"schema": schema_ref(Health)}},
        },
    },
)
def healthz(billkeep: Engine) -> Response:
    database_ok = billkeep.db.ping()
    body = {
        "status": "ok" if database_ok else "degraded",
        "database": "ok" if database_ok else "unavailable",
    }
    return json_response(body, 200 if database_ok else 503)


@router.get(
    "/metrics",
    response_model=None,
    summary="Prometheus metrics (no auth)",
    responses={
        200: {
            "description": "Prometheus text",
            "content": {metrics.CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
)
def prometheus_metrics() -> Response:
    return Response(metrics.render_metrics(), media_type=metrics.CONTENT_TYPE_LATEST)
