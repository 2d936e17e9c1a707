"""One-off charges: 201 succeeded, 402 failed, 202 pending (outcome not known yet)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from billkeep.api.deps import Command, Engine, JsonBody, Tenant, json_response
from billkeep.api.models import Charge, ChargeCreate, ChargeList
from billkeep.api.openapi import command_route, read_route
from billkeep.api.routers.customers import Cursor, Limit
from billkeep.domain.errors import ValidationFailed
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT

__all__ = ["router"]

router = APIRouter(prefix="/v1/charges", tags=["charges"])

# Fields the engine accepts from internal callers only (an invoice's charge): not from clients.
_INTERNAL_FIELDS = ("invoice_id",)


@router.post(
    "",
    **command_route(
        ChargeCreate, {201: Charge, 202: Charge, 402: Charge}, (404,), summary="Create a charge"
    ),
)
def create_charge(command: Command, body: JsonBody) -> Response:
    for name in _INTERNAL_FIELDS:
        if name in body:
            raise ValidationFailed.single(name, "unknown field")
    return command.run("charge.create", body)


@router.get("/{charge_id}", **read_route(Charge, (404,), summary="Retrieve a charge"))
def get_charge(charge_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(billkeep.queries.charge(tenant_id, charge_id))


@router.get("", **read_route(ChargeList, summary="List charges, newest first"))
def list_charges(
    tenant_id: Tenant,
    billkeep: Engine,
    customer_id: Annotated[str | None, Query()] = None,
    status: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = billkeep.queries.charges(tenant_id, customer_id, status, limit, cursor)
    return json_response(page.as_dict())
