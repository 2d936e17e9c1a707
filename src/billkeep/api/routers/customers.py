"""Customers: POST (a command) and reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from billkeep.api.deps import Command, Engine, JsonBody, Tenant, json_response
from billkeep.api.models import Customer, CustomerCreate, CustomerList
from billkeep.api.openapi import command_route, read_route
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT

__all__ = ["Cursor", "Limit", "router"]

router = APIRouter(prefix="/v1/customers", tags=["customers"])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


@router.post("", **command_route(CustomerCreate, {201: Customer}, summary="Create a customer"))
def create_customer(command: Command, body: JsonBody) -> Response:
    return command.run("customer.create", body)


@router.get("/{customer_id}", **read_route(Customer, (404,), summary="Retrieve a customer"))
def get_customer(customer_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(billkeep.queries.customer(tenant_id, customer_id))


@router.get("", **read_route(CustomerList, summary="List customers, newest first"))
def list_customers(
    tenant_id: Tenant,
    billkeep: Engine,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    return json_response(billkeep.queries.customers(tenant_id, limit, cursor).as_dict())
