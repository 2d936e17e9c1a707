"""The one list of routers the app includes.

To add an area (gateways and webhooks, billing, reconciliation, ...): create a module in this
package exposing `router: fastapi.APIRouter` and add its name to `ROUTER_MODULES`. Reuse
`billkeep.api.deps` (Tenant, Command, JsonBody, ...) and `billkeep.api.openapi`
(command_route, read_route) so every POST gets the same idempotency headers and error shapes.
A module in the list that does not exist yet is skipped, so the list may name areas still being
built.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter, FastAPI

__all__ = ["ROUTER_MODULES", "include_routers", "load_routers"]

ROUTER_MODULES: tuple[str, ...] = (
    "health",
    "customers",
    "charges",
    "refunds",
    "commands",
    "ledger",
    # Owned by other engineers; each appears when its module exists.
    "gateways",
    "webhooks",
    "billing",
    "reconciliation",
)


def load_routers() -> list[APIRouter]:
    routers: list[APIRouter] = []
    for name in ROUTER_MODULES:
        qualified = f"{__name__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise  # the module exists but one of its imports is missing: a real error
            continue
        router = getattr(module, "router", None)
        assert isinstance(router, APIRouter), f"{qualified} must expose `router: APIRouter`"
        routers.append(router)
    return routers


def include_routers(app: FastAPI) -> None:
    for router in load_routers():
        app.include_router(router)
