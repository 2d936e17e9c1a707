"""`create_app(billkeep, settings)`: the FastAPI application over one `Billkeep`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from billkeep.api.errors import install_error_handlers
from billkeep.api.logs import configure_logging
from billkeep.api.middleware import ApiMiddleware
from billkeep.api.openapi import install_openapi
from billkeep.api.routers import include_routers
from billkeep.api.settings import ApiSettings
from billkeep.engine.service import Billkeep

__all__ = ["API_VERSION", "create_app"]

API_VERSION = "1.0.0"
_DESCRIPTION = (
    "billkeep: billing with exactly-once financial effects. Every POST (but usage events and "
    "webhooks) takes an `Idempotency-Key`; errors are RFC 9457 `application/problem+json`."
)


def create_app(billkeep: Billkeep, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    configure_logging(json_output=settings.log_json, level=settings.log_level)
    engine_threads = settings.engine_threads

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Sync handlers and dependencies (every engine call) share this thread limiter.
        anyio.to_thread.current_default_thread_limiter().total_tokens = engine_threads
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="billkeep API",
        version=API_VERSION,
        description=_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.billkeep = billkeep
    app.state.settings = settings
    install_error_handlers(app)
    include_routers(app)
    install_openapi(app)
    # Outermost of the user middlewares: it sees every response, including last-resort 500s.
    app.add_middleware(ApiMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
