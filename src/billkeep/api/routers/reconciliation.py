"""Reconciliation: `POST /v1/reconciliations` (an idempotent command, `reconciliation.create`),
`GET /v1/reconciliations/{id}`, `GET /v1/reconciliations/{id}/breaks`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from billkeep.api.deps import Command, Engine, JsonBody, Tenant, json_response
from billkeep.api.models_reconciliation import (
    BREAK_TYPES,
    Reconciliation,
    ReconciliationBreakList,
    ReconciliationCreate,
)
from billkeep.api.openapi import command_route, read_route
from billkeep.api.routers.customers import Cursor, Limit
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT
from billkeep.reconciliation import views
from billkeep.reconciliation.operation import OPERATION
from billkeep.reconciliation.wiring import enable_reconciliation

__all__ = ["router"]

router = APIRouter(prefix="/v1/reconciliations", tags=["reconciliation"])


@router.post(
    "",
    **command_route(
        ReconciliationCreate,
        {201: Reconciliation},
        (404,),  # no such gateway (or no default one)
        summary="Reconcile a window against the gateway",
    ),
)
def create_reconciliation(command: Command, body: JsonBody) -> Response:
    enable_reconciliation(command.billkeep)
    return command.run(OPERATION, body)


@router.get(
    "/{run_id}", **read_route(Reconciliation, (404,), summary="Retrieve a reconciliation run")
)
def get_reconciliation(run_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(views.get_run(billkeep.db, tenant_id, run_id))


@router.get(
    "/{run_id}/breaks",
    **read_route(
        ReconciliationBreakList, (404,), summary="List a run's breaks, in the order found"
    ),
)
def list_reconciliation_breaks(
    run_id: str,
    tenant_id: Tenant,
    billkeep: Engine,
    type: Annotated[BREAK_TYPES | None, Query(description="Only breaks of this type.")] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = views.list_breaks(
        billkeep.db, tenant_id, run_id, break_type=type, limit=limit, cursor=cursor
    )
    return json_response(page.as_dict())
