"""Wiring: configuration -> store, core, faults, webhooks, app; and serving it with uvicorn."""

from __future__ import annotations

from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from billkeep.domain.clock import Clock, SystemClock
from billkeep.gateways.simulator.app import create_app
from billkeep.gateways.simulator.core import SimConfig, SimulatorCore
from billkeep.gateways.simulator.faults import FaultInjector
from billkeep.gateways.simulator.fees import FeeSchedule
from billkeep.gateways.simulator.http_common import SimContext
from billkeep.gateways.simulator.idempotency import InFlightKeys
from billkeep.gateways.simulator.limits import (
    ASYNC_SETTLE_DEFAULT_MS,
    WEBHOOK_MAX_ATTEMPTS,
    WEBHOOK_POLL_INTERVAL_MS,
    WEBHOOK_RETRY_BASE_MS,
)
from billkeep.gateways.simulator.store import SimStore
from billkeep.gateways.simulator.webhooks import BackgroundWorker, WebhookDispatcher

__all__ = ["ServerConfig", "build_app", "run_server"]

_GRACEFUL_SHUTDOWN_S = 2  # held (timeout_after_commit) responses must not stall a stop


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 12111
    db: str = "sim.db"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    seed: int | None = None
    fee_percent: str = "2.9"
    fee_fixed: int = 30
    async_settle_ms: int = ASYNC_SETTLE_DEFAULT_MS  # 0: only /_sim/.../settle settles
    webhook_max_attempts: int = WEBHOOK_MAX_ATTEMPTS
    webhook_retry_base_ms: int = WEBHOOK_RETRY_BASE_MS
    poll_interval_ms: int = WEBHOOK_POLL_INTERVAL_MS


def build_app(config: ServerConfig, clock: Clock | None = None) -> Starlette:
    if config.webhook_url and not config.webhook_secret:
        raise ValueError("--webhook-url needs --webhook-secret (events are always signed)")
    core = SimulatorCore(
        SimStore(config.db),
        clock or SystemClock(),
        SimConfig(
            fees=FeeSchedule.from_text(config.fee_percent, config.fee_fixed),
            webhook_url=config.webhook_url,
            async_settle_ms=config.async_settle_ms or None,
            seed=config.seed,
        ),
    )
    faults = FaultInjector(config.seed)
    dispatcher = None
    if config.webhook_url and config.webhook_secret:
        dispatcher = WebhookDispatcher(
            core,
            faults,
            config.webhook_secret,
            max_attempts=config.webhook_max_attempts,
            retry_base_ms=config.webhook_retry_base_ms,
        )
    worker = BackgroundWorker(core, dispatcher, config.poll_interval_ms)
    return create_app(SimContext(core, faults, dispatcher, InFlightKeys()), worker)


def run_server(config: ServerConfig) -> None:
    app = build_app(config)
    print(
        f"gateway-sim listening on http://{config.host}:{config.port} (db {config.db})", flush=True
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
