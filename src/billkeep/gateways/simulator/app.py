"""The Starlette application: Stripe routes + control routes around one SimContext."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from billkeep.gateways.simulator.control_routes import control_routes
from billkeep.gateways.simulator.http_common import SimContext
from billkeep.gateways.simulator.stripe_routes import stripe_routes
from billkeep.gateways.simulator.webhooks import BackgroundWorker

__all__ = ["create_app"]


def create_app(context: SimContext, worker: BackgroundWorker | None = None) -> Starlette:
    """The worker (webhooks, async settlement) runs for exactly the app's lifetime."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = Starlette(routes=[*stripe_routes(), *control_routes()], lifespan=lifespan)
    app.state.sim = context
    return app
