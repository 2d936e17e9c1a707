"""Asking the gateway about an object a parked event names (after `park_fetch_after_ms`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["GatewayObjects"]


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
