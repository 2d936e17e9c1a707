"""Wiring reconciliation and webhooks onto a Billkeep built by `billkeep.runtime` (configured
gateways: sources, webhook secrets and lookups all come from the gateway configuration store)."""

from __future__ import annotations

from billkeep.engine.service import Billkeep
from billkeep.reconciliation.operation import OPERATION, install
from billkeep.reconciliation.runner import ReconciliationConfig
from billkeep.reconciliation.sources import StripeSourceFactory
from billkeep.webhooks.endpoints import ConfigStoreEndpoints
from billkeep.webhooks.fetch import StripeObjects
from billkeep.webhooks.service import WebhookService

__all__ = ["enable_reconciliation", "webhook_service_for"]


def enable_reconciliation(billkeep: Billkeep, config: ReconciliationConfig | None = None) -> None:
    """Register `reconciliation.create` (sources from the configured gateways) if missing."""
    if OPERATION in billkeep.executor.operations:
        return
    from billkeep.runtime import enable_gateway_configs

    install(billkeep, StripeSourceFactory(enable_gateway_configs(billkeep)), config)


def webhook_service_for(billkeep: Billkeep) -> WebhookService:
    from billkeep.runtime import enable_gateway_configs

    store = enable_gateway_configs(billkeep)
    return WebhookService.create(
        billkeep.db, billkeep.clock, ConfigStoreEndpoints(store), objects=StripeObjects(store)
    )
