"""DatabaseGatewayDirectory: each tenant's configured gateway, else the process's default gateway.

A charge records the gateway id it was sent through (`charges.gateway`), and every later call for
that charge (resolution, lookups, refunds) goes to that same gateway, even if the tenant has since
configured another default. Configs never change after creation, so a built client is cached
(bounded, least recently used first out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.engine import Connection

from billkeep.gateways.config import GatewayConfigStore, GatewayCredentials
from billkeep.gateways.protocol import PaymentGateway
from billkeep.gateways.stripe import StripeGateway, StripeTimeouts

__all__ = ["GATEWAY_CACHE_SIZE", "DatabaseGatewayDirectory", "GatewayFactory", "stripe_factory"]

GATEWAY_CACHE_SIZE = 1_024
_CONFIGURED_PREFIX = "gw_"

GatewayFactory = Callable[[GatewayCredentials], PaymentGateway]


def stripe_factory(
    timeouts: StripeTimeouts | None = None, retention_ms: int | None = None
) -> GatewayFactory:
    """Build a StripeGateway named by the config's id (so charges record which config served them)."""

    def build(credentials: GatewayCredentials) -> PaymentGateway:
        assert credentials.kind == "stripe", f"unsupported gateway kind {credentials.kind}"
        extra = {} if retention_ms is None else {"retention_ms": retention_ms}
        return StripeGateway(
            credentials.api_key,
            api_base=credentials.api_base,
            name=credentials.gateway_id,
            timeouts=timeouts,
            **extra,  # type: ignore[arg-type]
        )

    return build


class DatabaseGatewayDirectory:
    """GatewayDirectory over `gateway_configs`, falling back to a default gateway."""

    def __init__(
        self,
        store: GatewayConfigStore,
        fallback: PaymentGateway,
        *,
        factory: GatewayFactory | None = None,
        cache_size: int = GATEWAY_CACHE_SIZE,
    ) -> None:
        self.store = store
        self.fallback = fallback
        self._factory = factory or stripe_factory()
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], PaymentGateway] = OrderedDict()
        self._lock = threading.Lock()

    def default_gateway_id(self, tenant_id: str, conn: Connection | None = None) -> str:
        return self.store.default_id(tenant_id, conn) or self.fallback.name

    def for_tenant(self, tenant_id: str, gateway_id: str | None = None) -> PaymentGateway:
        chosen = gateway_id if gateway_id is not None else self.default_gateway_id(tenant_id)
        if not chosen.startswith(_CONFIGURED_PREFIX):
            return self.fallback
        return self._configured(tenant_id, chosen)

    def _configured(self, tenant_id: str, gateway_id: str) -> PaymentGateway:
        key = (tenant_id, gateway_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        # Read and build outside the lock; the credentials query filters by tenant (isolation).
        gateway = self._factory(self.store.credentials(tenant_id, gateway_id))
        with self._lock:
            gateway = self._cache.setdefault(key, gateway)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return gateway
