"""The port the engine uses to move money: a PaymentGateway, and its classified outcomes.

Every call carries an idempotency key derived from the command, so repeating a call can never make
a second payment. Outcomes are classified, because each class needs a different reaction:

| outcome       | meaning                                        | the engine's reaction            |
|---------------|------------------------------------------------|----------------------------------|
| succeeded     | money moved                                    | finalize, post to the ledger     |
| declined      | the gateway refused it (final)                 | finalize as failed               |
| processing    | accepted, settles later (async methods)        | pending until webhook or lookup  |
| not_executed  | provably nothing happened (refused connection) | retry the same key later         |
| unknown       | sent, no answer (timeout, 5xx after sending)   | resolve by asking, never re-pay  |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sqlalchemy.engine import Connection

__all__ = [
    "GatewayDirectory",
    "GatewayLookupFailed",
    "Outcome",
    "PaymentGateway",
    "PaymentRequest",
    "PaymentResult",
    "RefundRequest",
    "RefundResult",
    "StaticGatewayDirectory",
]


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    PROCESSING = "processing"
    NOT_EXECUTED = "not_executed"
    UNKNOWN = "unknown"


class GatewayLookupFailed(Exception):
    """A read-only question to the gateway got no answer; ask again later."""


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    idempotency_key: str
    command_ref: str  # billkeep's command id: metadata[billkeep_command], so it can be found again
    amount_minor: int
    currency: str
    payment_method: str
    customer_ref: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentResult:
    outcome: Outcome
    reference: str | None = None  # the gateway's id (pi_...)
    amount_minor: int | None = None
    currency: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    command_ref: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class RefundRequest:
    idempotency_key: str
    command_ref: str
    payment_reference: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class RefundResult:
    outcome: Outcome
    reference: str | None = None  # re_...
    amount_minor: int | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    detail: str | None = None


class PaymentGateway(Protocol):
    """What the engine needs from a payment gateway."""

    @property
    def name(self) -> str: ...

    @property
    def idempotency_retention_ms(self) -> int:
        """How long the gateway remembers an idempotency key (Stripe: 24 h)."""
        ...

    def create_payment(self, request: PaymentRequest) -> PaymentResult: ...

    def retrieve_payment(self, reference: str) -> PaymentResult:
        """Current state of a known payment; raises GatewayLookupFailed when unreachable."""
        ...

    def find_payments(self, command_ref: str) -> list[PaymentResult]:
        """Every payment made for this command; raises GatewayLookupFailed when unreachable."""
        ...

    def create_refund(self, request: RefundRequest) -> RefundResult: ...

    def find_refunds(self, payment_reference: str, command_ref: str) -> list[RefundResult]:
        """Every refund of the payment made for this command (metadata[billkeep_command]);
        raises GatewayLookupFailed when unreachable."""
        ...


class GatewayDirectory(Protocol):
    """Which gateway serves a tenant (a tenant may configure its own, see the gateways issue)."""

    def for_tenant(self, tenant_id: str, gateway_id: str | None = None) -> PaymentGateway: ...

    def default_gateway_id(self, tenant_id: str, conn: Connection | None = None) -> str:
        """The tenant's default gateway; given `conn`, read on it (a caller inside a transaction
        must not take a second pooled connection: under load that exhausts the pool)."""
        ...


class StaticGatewayDirectory:
    """Every tenant uses the same gateway: the library default and the tests' choice."""

    def __init__(self, gateway: PaymentGateway) -> None:
        self._gateway = gateway

    def for_tenant(self, tenant_id: str, gateway_id: str | None = None) -> PaymentGateway:
        return self._gateway

    def default_gateway_id(self, tenant_id: str, conn: Connection | None = None) -> str:
        return self._gateway.name
