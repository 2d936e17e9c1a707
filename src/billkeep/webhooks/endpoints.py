"""Which tenant a webhook URL belongs to, and the secrets its signatures are checked with.

`POST /v1/webhooks/{gateway_id}` carries no API key: the gateway id names the tenant's gateway
configuration, whose webhook secrets (several while a secret is being rotated) authenticate the
event. The gateway configuration store implements `WebhookEndpoints`; `StaticWebhookEndpoints`
serves tests and single-gateway deployments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ConfigStoreEndpoints",
    "GatewayEndpoint",
    "StaticWebhookEndpoints",
    "WebhookEndpoints",
]


@dataclass(frozen=True, slots=True)
class GatewayEndpoint:
    tenant_id: str
    gateway_id: str
    secrets: tuple[str, ...]

    def __post_init__(self) -> None:
        assert self.secrets, "a webhook endpoint needs at least one secret"


class WebhookEndpoints(Protocol):
    def lookup(self, gateway_id: str) -> GatewayEndpoint | None:
        """The endpoint of this gateway id, or None when no tenant configured it."""
        ...


class StaticWebhookEndpoints:
    def __init__(self, endpoints: Iterable[GatewayEndpoint] = ()) -> None:
        self._by_id = {e.gateway_id: e for e in endpoints}

    def add(self, endpoint: GatewayEndpoint) -> None:
        self._by_id[endpoint.gateway_id] = endpoint

    def lookup(self, gateway_id: str) -> GatewayEndpoint | None:
        return self._by_id.get(gateway_id)


class _CredentialsById(Protocol):
    def credentials_by_id(self, gateway_id: str) -> Any | None: ...


class ConfigStoreEndpoints:
    """Endpoints from the gateway configuration store (billkeep.gateways.config): the webhook
    secrets are decrypted per request, so a rotation takes effect at once."""

    def __init__(self, store: _CredentialsById) -> None:
        self._store = store

    def lookup(self, gateway_id: str) -> GatewayEndpoint | None:
        credentials = self._store.credentials_by_id(gateway_id)
        if credentials is None or not credentials.webhook_secrets:
            return None
        return GatewayEndpoint(
            credentials.tenant_id, credentials.gateway_id, tuple(credentials.webhook_secrets)
        )
