"""`SimulatedGateway`: billkeep's PaymentGateway port on top of the in-process `SimulatorCore`.

The gateway logic (idempotency keys, declines, async settlement, refund limits) is the
simulator's; this adapter adds what a network adds, each drawn from the seed: a refused
connection (nothing happened, and the caller knows it), a timeout or 5xx before the gateway
commits (nothing happened, but the caller cannot know), a timeout or 5xx after it commits (the
payment exists, the caller hears nothing useful), and latency (the simulated clock moves).

Between sending a request and the gateway committing, and between the commit and the answer
arriving, the calling actor reaches a yield point: the scheduler may run other actors there, so
"the webhook/worker/duplicate got in while this call was on the wire" happens for real.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Connection

from billkeep.domain.clock import ManualClock
from billkeep.gateways.protocol import (
    GatewayLookupFailed,
    Outcome,
    PaymentRequest,
    PaymentResult,
    RefundRequest,
    RefundResult,
)
from billkeep.gateways.simulator import SimulatorCore
from billkeep.gateways.simulator.errors import StripeError
from billkeep.gateways.simulator.params import (
    ListRequest,
    PaymentIntentCreate,
    RefundCreate,
    SearchRequest,
)

__all__ = [
    "COMMAND_METADATA_KEY",
    "GATEWAY_NAME",
    "TENANT_METADATA_KEY",
    "GatewayFaults",
    "NetworkFault",
    "SimGatewayDirectory",
    "SimulatedGateway",
]

# How long a request can be on the network before it is lost for good (well under the gateway's
# 24 h idempotency-key retention, far over any client timeout).
MAX_IN_FLIGHT_MS = 10 * 60_000

GATEWAY_NAME = "sim"
COMMAND_METADATA_KEY = "billkeep_command"
TENANT_METADATA_KEY = "billkeep_tenant"  # lets the auditor attribute gateway money to a tenant
SEARCH_PAGE_LIMIT = 100


class NetworkFault(StrEnum):
    REFUSED = "refused"  # connection refused: provably not executed
    TIMEOUT_BEFORE_COMMIT = "timeout_before_commit"
    ERROR_BEFORE_COMMIT = "error_before_commit"  # 5xx, nothing happened
    ERROR_AFTER_COMMIT = "error_after_commit"  # 5xx, the effect exists
    TIMEOUT_AFTER_COMMIT = "timeout_after_commit"


_BEFORE_COMMIT = (NetworkFault.TIMEOUT_BEFORE_COMMIT, NetworkFault.ERROR_BEFORE_COMMIT)
_AFTER_COMMIT = (NetworkFault.ERROR_AFTER_COMMIT, NetworkFault.TIMEOUT_AFTER_COMMIT)


@dataclass
class GatewayFaults:
    """Seeded network faults; `enabled=False` when the simulation's faults stop."""

    rng: random.Random
    fault_probability: float
    lookup_failure_probability: float
    max_latency_ms: int
    enabled: bool = True
    log: list[str] = field(default_factory=list)

    def draw(self, call: str) -> NetworkFault | None:
        if not self.enabled or self.rng.random() >= self.fault_probability:
            return None
        fault = self.rng.choice(list(NetworkFault))
        self.log.append(f"{call}:{fault.value}")
        return fault

    def lookup_fails(self) -> bool:
        return self.enabled and self.rng.random() < self.lookup_failure_probability

    def latency_ms(self) -> int:
        if not self.enabled or self.max_latency_ms <= 0:
            return 0
        return self.rng.randint(0, self.max_latency_ms)


@dataclass
class GatewayRecords:
    """What the adapter saw go over the wire, for the auditor (I11: recorded before the effect)."""

    payment_keys: dict[str, str] = field(default_factory=dict)  # pi id -> idempotency key
    refund_keys: dict[str, str] = field(default_factory=dict)  # re id -> idempotency key
    violations: list[str] = field(default_factory=list)  # requests the gateway refused as invalid


class SimulatedGateway:
    """One tenant's view of the shared simulated gateway (tags every object with the tenant)."""

    def __init__(
        self,
        core: SimulatorCore,
        tenant_id: str,
        clock: ManualClock,
        faults: GatewayFaults,
        records: GatewayRecords,
        yield_point: Callable[[str], None],
    ) -> None:
        self._core = core
        self._tenant_id = tenant_id
        self._clock = clock
        self._faults = faults
        self._records = records
        self._yield = yield_point

    @property
    def name(self) -> str:
        return GATEWAY_NAME

    @property
    def idempotency_retention_ms(self) -> int:
        return self._core.config.idempotency_retention_ms

    def _on_the_wire(self, call: str, phase: str) -> bool:
        """A yield point while a call is on the network. Returns False when a request was held
        longer than MAX_IN_FLIGHT_MS: it is never delivered (a real request is delivered within
        seconds or not at all; without this bound the model would deliver a request a day late,
        after the gateway forgot its idempotency key, which no network does)."""
        sent_ms = self._clock.now_ms()
        self._clock.advance(self._faults.latency_ms())
        self._yield(f"gateway:{call}:{phase}")
        return phase != "request" or self._clock.now_ms() - sent_ms <= MAX_IN_FLIGHT_MS

    def _metadata(self, command_ref: str) -> dict[str, str]:
        return {COMMAND_METADATA_KEY: command_ref, TENANT_METADATA_KEY: self._tenant_id}

    # --- payments --------------------------------------------------------------------------------
    def create_payment(self, request: PaymentRequest) -> PaymentResult:
        fault = self._faults.draw("create_payment")
        if not self._on_the_wire("create_payment", "request"):
            return PaymentResult(Outcome.UNKNOWN, detail="sim: request timed out, never delivered")
        if fault is NetworkFault.REFUSED:
            return PaymentResult(Outcome.NOT_EXECUTED, detail="sim: connection refused")
        if fault in _BEFORE_COMMIT:
            return PaymentResult(Outcome.UNKNOWN, detail=f"sim: {fault}")
        params = PaymentIntentCreate(
            amount=request.amount_minor,
            currency=request.currency,
            payment_method=request.payment_method,
            confirm=True,
            off_session=True,
            description=request.description,
            metadata=self._metadata(request.command_ref),
        )
        try:
            response = self._core.create_payment_intent(params, request.idempotency_key)
        except StripeError as exc:
            self._records.violations.append(f"create_payment {request.idempotency_key}: {exc}")
            raise
        body = response.body
        intent = body["error"].get("payment_intent") if "error" in body else body
        if isinstance(intent, dict) and intent.get("id"):
            self._records.payment_keys.setdefault(str(intent["id"]), request.idempotency_key)
        self._on_the_wire("create_payment", "committed")
        if fault in _AFTER_COMMIT:
            return PaymentResult(Outcome.UNKNOWN, detail=f"sim: {fault}")
        if not isinstance(intent, dict):
            return PaymentResult(Outcome.UNKNOWN, detail=f"sim: status {response.status_code}")
        return payment_result(intent)

    def retrieve_payment(self, reference: str) -> PaymentResult:
        if not self._on_the_wire("retrieve_payment", "request"):
            raise GatewayLookupFailed("sim: request timed out, never delivered")
        if self._faults.lookup_fails():
            raise GatewayLookupFailed("sim: lookup timed out")
        try:
            intent = self._core.retrieve("payment_intent", reference)
        except StripeError as exc:
            raise GatewayLookupFailed(str(exc)) from exc
        return payment_result(intent)

    def find_payments(self, command_ref: str) -> list[PaymentResult]:
        if not self._on_the_wire("find_payments", "request"):
            raise GatewayLookupFailed("sim: request timed out, never delivered")
        if self._faults.lookup_fails():
            raise GatewayLookupFailed("sim: search timed out")
        query = f"metadata['{COMMAND_METADATA_KEY}']:'{command_ref}'"
        found = self._core.search_payment_intents(
            SearchRequest(query=query, limit=SEARCH_PAGE_LIMIT)
        )
        return [payment_result(intent) for intent in found["data"]]

    # --- refunds ---------------------------------------------------------------------------------
    def find_refunds(self, payment_reference: str, command_ref: str) -> list[RefundResult]:
        if not self._on_the_wire("find_refunds", "request"):
            raise GatewayLookupFailed("sim: request timed out, never delivered")
        if self._faults.lookup_fails():
            raise GatewayLookupFailed("sim: refund listing timed out")
        listing = self._core.list(
            "refund",
            ListRequest(limit=100, filters=(("ref", payment_reference),)),
            "/v1/refunds",
        )
        return [
            RefundResult(_refund_outcome(str(r["status"])), str(r["id"]), int(r["amount"]))
            for r in listing["data"]
            if (r.get("metadata") or {}).get(COMMAND_METADATA_KEY) == command_ref
        ]

    def create_refund(self, request: RefundRequest) -> RefundResult:
        fault = self._faults.draw("create_refund")
        if not self._on_the_wire("create_refund", "request"):
            return RefundResult(Outcome.UNKNOWN, detail="sim: request timed out, never delivered")
        if fault is NetworkFault.REFUSED:
            return RefundResult(Outcome.NOT_EXECUTED, detail="sim: connection refused")
        if fault in _BEFORE_COMMIT:
            return RefundResult(Outcome.UNKNOWN, detail=f"sim: {fault}")
        params = RefundCreate(
            payment_intent=request.payment_reference,
            amount=request.amount_minor,
            metadata=self._metadata(request.command_ref),
        )
        try:
            response = self._core.create_refund(params, request.idempotency_key)
        except StripeError as exc:
            self._on_the_wire("create_refund", "committed")
            if exc.status_code == 400 and exc.type == "invalid_request_error":
                return RefundResult(
                    Outcome.DECLINED, failure_code=exc.code, failure_message=exc.message
                )
            self._records.violations.append(f"create_refund {request.idempotency_key}: {exc}")
            raise
        refund = response.body
        self._records.refund_keys.setdefault(str(refund["id"]), request.idempotency_key)
        self._on_the_wire("create_refund", "committed")
        if fault in _AFTER_COMMIT:
            return RefundResult(Outcome.UNKNOWN, detail=f"sim: {fault}")
        outcome = Outcome.SUCCEEDED if refund["status"] == "succeeded" else Outcome.PROCESSING
        return RefundResult(outcome, str(refund["id"]), int(refund["amount"]))


def _refund_outcome(status: str) -> Outcome:
    return {
        "succeeded": Outcome.SUCCEEDED,
        "failed": Outcome.DECLINED,
        "canceled": Outcome.DECLINED,
    }.get(status, Outcome.PROCESSING)


def payment_result(intent: dict[str, Any]) -> PaymentResult:
    """Classify a Stripe PaymentIntent object."""
    status = intent["status"]
    metadata = intent.get("metadata") or {}
    common: dict[str, Any] = {
        "reference": str(intent["id"]),
        "amount_minor": int(intent["amount"]),
        "currency": str(intent["currency"]),
        "command_ref": metadata.get(COMMAND_METADATA_KEY),
    }
    if status == "succeeded":
        return PaymentResult(Outcome.SUCCEEDED, **common)
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        error = intent["last_payment_error"]
        return PaymentResult(
            Outcome.DECLINED,
            failure_code=error.get("decline_code") or error.get("code"),
            failure_message=error.get("message"),
            **common,
        )
    return PaymentResult(Outcome.PROCESSING, **common)


class SimGatewayDirectory:
    """Every tenant pays through the one simulated gateway, each tagged with its tenant."""

    def __init__(
        self,
        core: SimulatorCore,
        clock: ManualClock,
        faults: GatewayFaults,
        records: GatewayRecords,
        yield_point: Callable[[str], None],
    ) -> None:
        self.core = core
        self.faults = faults
        self.records = records
        self._clock = clock
        self._yield = yield_point
        self._by_tenant: dict[str, SimulatedGateway] = {}

    def for_tenant(self, tenant_id: str, gateway_id: str | None = None) -> SimulatedGateway:
        assert gateway_id in (None, GATEWAY_NAME), f"unknown gateway {gateway_id}"
        if tenant_id not in self._by_tenant:
            self._by_tenant[tenant_id] = SimulatedGateway(
                self.core, tenant_id, self._clock, self.faults, self.records, self._yield
            )
        return self._by_tenant[tenant_id]

    def default_gateway_id(self, tenant_id: str, conn: Connection | None = None) -> str:
        return GATEWAY_NAME
