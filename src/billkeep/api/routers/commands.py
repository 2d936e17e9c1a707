"""The command ledger: every command with its request, stored response and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from billkeep.api.deps import Engine, Tenant, json_response
from billkeep.api.models import Command, CommandList
from billkeep.api.openapi import read_route
from billkeep.api.routers.customers import Cursor, Limit
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT

__all__ = ["router"]

router = APIRouter(prefix="/v1/commands", tags=["commands"])


@router.get("/{command_id}", **read_route(Command, (404,), summary="Retrieve a command"))
def get_command(command_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(billkeep.queries.command(tenant_id, command_id))


@router.get("", **read_route(CommandList, summary="List commands, newest first"))
def list_commands(
    tenant_id: Tenant,
    billkeep: Engine,
    state: Annotated[str | None, Query()] = None,
    operation: Annotated[str | None, Query()] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = billkeep.queries.commands(tenant_id, state, operation, limit, cursor)
    return json_response(page.as_dict())
