"""Asking the gateway about an object a parked event names (after `park_fetch_after_ms`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import stripe

from billkeep.gateways.protocol import GatewayLookupFailed

__all__ = ["GatewayObjects", "StripeObjects"]


class GatewayObjects(Protocol):
    """Read-only lookups; raise billkeep.gateways.protocol.GatewayLookupFailed when unreachable."""

    def payment_intent(
        self, tenant_id: str, gateway_id: str, reference: str
    ) -> Mapping[str, Any] | None:
        """The payment intent object, or None when the gateway has no such intent."""
        ...

    def charge_payment_intent(self, tenant_id: str, gateway_id: str, charge_id: str) -> str | None:
        """The payment intent a gateway charge belongs to, or None."""
        ...


class _CredentialsStore(Protocol):
    def credentials(self, tenant_id: str, gateway_id: str) -> Any: ...


class StripeObjects:
    """GatewayObjects over Stripe's API with the gateway's configured key and api_base."""

    def __init__(self, store: _CredentialsStore, timeout_s: float = 10.0) -> None:
        self._store = store
        self._timeout_s = timeout_s

    def _client(self, tenant_id: str, gateway_id: str) -> stripe.StripeClient:
        credentials = self._store.credentials(tenant_id, gateway_id)
        http_client = stripe.HTTPXClient(timeout=self._timeout_s, allow_sync_methods=True)
        return stripe.StripeClient(
            credentials.api_key,
            base_addresses={"api": credentials.api_base},
            http_client=http_client,
        )

    def payment_intent(
        self, tenant_id: str, gateway_id: str, reference: str
    ) -> Mapping[str, Any] | None:
        try:
            intent = self._client(tenant_id, gateway_id).v1.payment_intents.retrieve(reference)
        except stripe.InvalidRequestError:
            return None  # 404: the gateway has no such intent
        except stripe.StripeError as exc:
            raise GatewayLookupFailed(str(exc)) from exc
        return dict(intent.to_dict())

    def charge_payment_intent(self, tenant_id: str, gateway_id: str, charge_id: str) -> str | None:
        try:
            charge = self._client(tenant_id, gateway_id).v1.charges.retrieve(charge_id)
        except stripe.InvalidRequestError:
            return None
        except stripe.StripeError as exc:
            raise GatewayLookupFailed(str(exc)) from exc
        intent = charge.get("payment_intent")
        return intent if isinstance(intent, str) else None
