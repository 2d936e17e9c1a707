"""Gateways: `POST /v1/gateways` (a command) and reads. Secrets go in, never out."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from billkeep.api.deps import Command, Engine, JsonBody, Tenant, json_response
from billkeep.api.openapi import command_route, read_route
from billkeep.gateways.config import MAX_SECRET_LENGTH, CreateGateway
from billkeep.runtime import enable_gateway_configs
from billkeep.storage.tables.gateways import MAX_API_BASE_LENGTH

__all__ = ["Gateway", "GatewayCreate", "GatewayList", "router"]

router = APIRouter(prefix="/v1/gateways", tags=["gateways"])


class GatewayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["stripe"]
    api_key: str = Field(
        min_length=1, max_length=MAX_SECRET_LENGTH, description="`sk_...` or `rk_...`; write-only."
    )
    webhook_secret: str = Field(
        min_length=1, max_length=MAX_SECRET_LENGTH, description="`whsec_...`; write-only."
    )
    api_base: str | None = Field(
        default=None, max_length=MAX_API_BASE_LENGTH, description="Default https://api.stripe.com."
    )


class Gateway(BaseModel):
    """A configured gateway. Its secrets are encrypted at rest and never returned."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["gateway"]
    kind: str
    api_base: str
    webhook_url_path: str = Field(description="Where the gateway must POST its events.")
    is_default: bool
    created_at: str


class GatewayList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[Gateway]
    has_more: bool
    next_cursor: str | None


@router.post("", **command_route(GatewayCreate, {201: Gateway}, summary="Configure a gateway"))
def create_gateway(command: Command, body: JsonBody) -> Response:
    enable_gateway_configs(command.billkeep)
    return command.run(CreateGateway.name, body)


@router.get("", **read_route(GatewayList, summary="List the tenant's gateways"))
def list_gateways(tenant_id: Tenant, billkeep: Engine) -> Response:
    gateways = enable_gateway_configs(billkeep).list(tenant_id)
    # A tenant has a handful of gateways: one page, in the list envelope every list uses.
    return json_response(
        {"object": "list", "data": gateways, "has_more": False, "next_cursor": None}
    )


@router.get("/{gateway_id}", **read_route(Gateway, (404,), summary="Retrieve a gateway"))
def get_gateway(gateway_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(enable_gateway_configs(billkeep).get(tenant_id, gateway_id))
