"""`billkeep gateway-sim`: the Stripe-compatible, fault-injecting gateway simulator."""

from __future__ import annotations

import typer

from billkeep.gateways.simulator.limits import (
    ASYNC_SETTLE_DEFAULT_MS,
    WEBHOOK_MAX_ATTEMPTS,
    WEBHOOK_RETRY_BASE_MS,
)
from billkeep.gateways.simulator.server import ServerConfig, run_server

__all__ = ["gateway_sim", "register"]


def gateway_sim(
    port: int = typer.Option(12111, help="TCP port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    db: str = typer.Option("sim.db", help="SQLite file holding the simulator's state."),
    webhook_url: str | None = typer.Option(None, help="Where events are POSTed."),
    webhook_secret: str | None = typer.Option(None, help="whsec_... secret signing each event."),
    seed: int | None = typer.Option(None, help="Seed for fault decisions and object ids."),
    fee_percent: str = typer.Option("2.9", help="Percentage fee per charge (exact decimal)."),
    fee_fixed: int = typer.Option(30, help="Fixed fee per charge, in minor units."),
    async_settle_ms: int = typer.Option(
        ASYNC_SETTLE_DEFAULT_MS, help="pm_card_async settles after this delay; 0: manual only."
    ),
    webhook_max_attempts: int = typer.Option(WEBHOOK_MAX_ATTEMPTS, help="Attempts per event."),
    webhook_retry_base_ms: int = typer.Option(
        WEBHOOK_RETRY_BASE_MS, help="First retry delay; doubles per attempt."
    ),
) -> None:
    """Run the gateway simulator (Stripe wire format, faults, webhooks) until interrupted."""
    run_server(
        ServerConfig(
            host=host,
            port=port,
            db=db,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            seed=seed,
            fee_percent=fee_percent,
            fee_fixed=fee_fixed,
            async_settle_ms=async_settle_ms,
            webhook_max_attempts=webhook_max_attempts,
            webhook_retry_base_ms=webhook_retry_base_ms,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("gateway-sim")(gateway_sim)
