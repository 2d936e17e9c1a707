"""Refunds: never more than what is left (the engine locks the charge; concurrent refunds count)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from billkeep.api.deps import Command, Engine, JsonBody, Tenant, json_response
from billkeep.api.models import Refund, RefundCreate
from billkeep.api.openapi import command_route, read_route

__all__ = ["router"]

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


@router.post(
    "", **command_route(RefundCreate, {201: Refund, 202: Refund}, (404,), summary="Refund a charge")
)
def create_refund(command: Command, body: JsonBody) -> Response:
    return command.run("refund.create", body)


@router.get("/{refund_id}", **read_route(Refund, (404,), summary="Retrieve a refund"))
def get_refund(refund_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(billkeep.queries.refund(tenant_id, refund_id))
