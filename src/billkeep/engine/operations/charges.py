"""charge.create: one payment per intent, whatever happens.

Recovery points:
- `started`: record the charge and payment attempt #1 (one transaction) -> `attempt_recorded`.
- `attempt_recorded`: call the gateway with the attempt's deterministic idempotency key (outside
  any transaction), then record the classified outcome with its ledger entries (one transaction).
- `outcome_unknown`: the call was sent but no answer came. Resolve by asking: repeat the same key
  while the gateway remembers it; after that, look the payment up by metadata[billkeep_command];
  only when the gateway proves no payment exists does attempt #n+1 start, with a new key.
- `processing`: an asynchronous payment; ask the gateway for its current state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.commands import CommandState
from billkeep.domain.errors import ValidationFailed
from billkeep.domain.ids import new_id
from billkeep.domain.money import Money
from billkeep.engine import accounting
from billkeep.engine.operations.validation import (
    MAX_DESCRIPTION_LENGTH,
    check_unknown_fields,
    gather,
    optional_string,
    required_string,
    validate_metadata,
)
from billkeep.engine.problems import problem
from billkeep.engine.steps import (
    Advance,
    Finish,
    ForeignStep,
    LocalStep,
    Step,
    StepContext,
    Suspend,
    Transition,
)
from billkeep.engine.views import charge_view
from billkeep.gateways.protocol import GatewayLookupFailed, Outcome, PaymentRequest, PaymentResult
from billkeep.storage.tables.core import charge_attempts, charges, customers

__all__ = [
    "CreateCharge",
    "attempt_key",
    "load_charge",
    "settle_charge_failed",
    "settle_charge_succeeded",
]

MAX_ATTEMPTS = 10  # new attempts only follow proof of no payment; more than this is a loop
# A lookup proves absence only for calls older than this: longer than any client timeout plus the
# gateway's search lag (Stripe's search is eventually consistent, about a minute behind).
LOOKUP_GRACE_MS = 5 * 60_000


def attempt_key(command_id: str, attempt_number: int) -> str:
    """The gateway idempotency key of one attempt: derived, never random, so a retry reuses it."""
    return f"billkeep-{command_id}-attempt-{attempt_number}"


@dataclass(frozen=True)
class _Resolution:
    kind: str  # "result" | "lookup_failed" | "no_payment"
    attempt_number: int
    result: PaymentResult | None = None
    detail: str | None = None


def load_charge(conn: Connection, tenant_id: str, charge_id: str, *, lock: bool = False) -> Any:
    query = sa.select(charges).where(charges.c.tenant_id == tenant_id, charges.c.id == charge_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).one()


def _load_attempt(conn: Connection, tenant_id: str, charge_id: str, number: int) -> Any:
    return conn.execute(
        sa.select(charge_attempts).where(
            charge_attempts.c.tenant_id == tenant_id,
            charge_attempts.c.charge_id == charge_id,
            charge_attempts.c.attempt_number == number,
        )
    ).one()


class CreateCharge:
    name = "charge.create"

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        check_unknown_fields(
            request,
            {
                "customer_id",
                "amount",
                "currency",
                "description",
                "metadata",
                "payment_method",
                "invoice_id",
            },
        )
        money: dict[str, Any] = {}

        def parse_money() -> None:
            parsed = Money.parse(request.get("amount"), request.get("currency"))
            money.update(amount=parsed.amount_minor, currency=parsed.currency)

        result = gather(
            {
                "customer_id": lambda: required_string(request, "customer_id"),
                "money": parse_money,
                "description": lambda: optional_string(
                    request, "description", MAX_DESCRIPTION_LENGTH
                ),
                "metadata": lambda: validate_metadata(request.get("metadata")),
                "payment_method": lambda: optional_string(request, "payment_method"),
                "invoice_id": lambda: optional_string(request, "invoice_id"),
            }
        )
        del result["money"]
        return {**result, **money}

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        customer = conn.execute(
            sa.select(customers.c.payment_method).where(
                customers.c.tenant_id == tenant_id, customers.c.id == request["customer_id"]
            )
        ).first()
        if customer is None:
            raise ValidationFailed.single("customer_id", "no such customer")
        if request["payment_method"] is None and customer.payment_method is None:
            raise ValidationFailed.single("payment_method", "required: the customer has no default")

    def steps(self) -> Mapping[str, Step]:
        return {
            "started": LocalStep(self._record_charge),
            # Sending an attempt and resolving it are one step: after a crash we cannot know
            # whether the key was already sent, so a resumed send must also check the key's age
            # (a key the gateway has forgotten would pay again) and look the payment up instead.
            "attempt_recorded": ForeignStep(self._resolve, self._record_resolution),
            "outcome_unknown": ForeignStep(self._resolve, self._record_resolution),
            "processing": ForeignStep(self._check_processing, self._record_payment),
        }

    # --- started ---------------------------------------------------------------------------------
    def _record_charge(self, ctx: StepContext, conn: Connection) -> Transition:
        request, now_ms = ctx.request, ctx.now_ms()
        payment_method = (
            request["payment_method"]
            or conn.execute(
                sa.select(customers.c.payment_method).where(
                    customers.c.tenant_id == ctx.tenant_id, customers.c.id == request["customer_id"]
                )
            ).scalar_one()
        )
        charge_id = new_id("ch", now_ms)
        conn.execute(
            charges.insert().values(
                tenant_id=ctx.tenant_id,
                id=charge_id,
                command_id=ctx.command_id,
                customer_id=request["customer_id"],
                amount_minor=request["amount"],
                currency=request["currency"],
                status="pending",
                amount_refunded_minor=0,
                gateway=ctx.services.gateways.default_gateway_id(ctx.tenant_id, conn),
                gateway_reference=None,
                payment_method=payment_method,
                failure_code=None,
                failure_message=None,
                description=request["description"],
                metadata=json.dumps(request["metadata"], sort_keys=True),
                current_attempt=1,
                invoice_id=request["invoice_id"],
                created_at_ms=now_ms,
                updated_at_ms=now_ms,
            )
        )
        _insert_attempt(conn, ctx, charge_id, 1, now_ms)
        return Advance(
            "attempt_recorded", detail="charge and attempt 1 recorded", resource_id=charge_id
        )

    # --- attempt_recorded -----------------------------------------------------------------------
    def _record_payment(
        self, ctx: StepContext, conn: Connection, answer: _Resolution
    ) -> Transition:
        assert answer.result is not None
        return _apply_result(ctx, conn, answer.attempt_number, answer.result)

    # --- outcome_unknown ------------------------------------------------------------------------
    def _resolve(self, ctx: StepContext) -> _Resolution:
        def read(conn: Connection) -> tuple[Any, Any]:
            charge = load_charge(conn, ctx.tenant_id, _rid(ctx))
            return charge, _load_attempt(conn, ctx.tenant_id, charge.id, charge.current_attempt)

        charge, attempt = ctx.services.db.run_read(read)
        gateway = ctx.services.gateways.for_tenant(ctx.tenant_id, charge.gateway)
        config = ctx.services.config
        key_alive_until_ms = (
            attempt.created_at_ms + gateway.idempotency_retention_ms - config.gateway_key_margin_ms
        )
        if ctx.now_ms() < key_alive_until_ms:
            # The gateway still remembers the key: repeating the call replays the first outcome,
            # or performs the payment once if the first call never arrived.
            result = gateway.create_payment(_payment_request(ctx, charge))
            return _Resolution(
                "result", attempt.attempt_number, result, "repeated with the same key"
            )
        last_sent_ms = attempt.sent_at_ms or attempt.created_at_ms
        if ctx.now_ms() < last_sent_ms + LOOKUP_GRACE_MS:
            # The key was last sent moments ago (e.g. it kept failing before execution for a day):
            # a request may still be executing, and Stripe's search lags. "Not found" now would
            # not prove absence; ask again after the grace.
            return _Resolution(
                "lookup_failed", attempt.attempt_number, detail="last call too recent to look up"
            )
        try:
            found = gateway.find_payments(ctx.command_id)
        except GatewayLookupFailed as exc:
            return _Resolution("lookup_failed", attempt.attempt_number, detail=str(exc))
        best = _best_payment(found)
        if best is None:
            return _Resolution(
                "no_payment", attempt.attempt_number, detail="gateway has no payment"
            )
        return _Resolution("result", attempt.attempt_number, best, "found by lookup")

    def _record_resolution(
        self, ctx: StepContext, conn: Connection, answer: _Resolution
    ) -> Transition:
        if answer.kind == "result":
            assert answer.result is not None
            return _apply_result(ctx, conn, answer.attempt_number, answer.result, answer.detail)
        charge = load_charge(conn, ctx.tenant_id, _rid(ctx), lock=True)
        if answer.kind == "lookup_failed":
            return _unknown(
                ctx,
                conn,
                charge,
                answer.attempt_number,
                f"lookup failed: {answer.detail}",
                sent=False,
            )
        next_number = answer.attempt_number + 1
        assert next_number <= MAX_ATTEMPTS, f"charge {charge.id}: too many attempts"
        now_ms = ctx.now_ms()
        _update_attempt(
            conn, ctx, charge.id, answer.attempt_number, "no_payment", None, now_ms, "proven_absent"
        )
        _insert_attempt(conn, ctx, charge.id, next_number, now_ms)
        conn.execute(
            charges.update()
            .where(charges.c.tenant_id == ctx.tenant_id, charges.c.id == charge.id)
            .values(current_attempt=next_number, updated_at_ms=now_ms)
        )
        return Advance("attempt_recorded", detail=f"no payment at gateway; attempt {next_number}")

    # --- processing -----------------------------------------------------------------------------
    def _check_processing(self, ctx: StepContext) -> _Resolution:
        charge = ctx.services.db.run_read(lambda c: load_charge(c, ctx.tenant_id, _rid(ctx)))
        gateway = ctx.services.gateways.for_tenant(ctx.tenant_id, charge.gateway)
        try:
            result = gateway.retrieve_payment(charge.gateway_reference)
        except GatewayLookupFailed as exc:
            result = PaymentResult(Outcome.PROCESSING, charge.gateway_reference, detail=str(exc))
        return _Resolution("result", charge.current_attempt, result)


def _rid(ctx: StepContext) -> str:
    assert ctx.resource_id is not None, "the charge exists after `started`"
    return ctx.resource_id


def _payment_request(ctx: StepContext, charge: Any) -> PaymentRequest:
    return PaymentRequest(
        idempotency_key=attempt_key(ctx.command_id, charge.current_attempt),
        command_ref=ctx.command_id,
        amount_minor=charge.amount_minor,
        currency=charge.currency,
        payment_method=charge.payment_method,
        customer_ref=None,
        description=charge.description,
    )


def _best_payment(found: list[PaymentResult]) -> PaymentResult | None:
    for outcome in (Outcome.SUCCEEDED, Outcome.PROCESSING, Outcome.DECLINED):
        for result in found:
            if result.outcome is outcome:
                return result
    return None


def _insert_attempt(
    conn: Connection, ctx: StepContext, charge_id: str, number: int, now_ms: int
) -> None:
    conn.execute(
        charge_attempts.insert().values(
            tenant_id=ctx.tenant_id,
            charge_id=charge_id,
            attempt_number=number,
            gateway_idempotency_key=attempt_key(ctx.command_id, number),
            status="created",
            gateway_reference=None,
            resolution=None,
            resolve_tries=0,
            sent_at_ms=None,
            created_at_ms=now_ms,
            resolved_at_ms=None,
        )
    )


def _update_attempt(
    conn: Connection,
    ctx: StepContext,
    charge_id: str,
    number: int,
    status: str,
    reference: str | None,
    now_ms: int,
    resolution: str | None = None,
    bump_tries: bool = False,
    sent: bool = True,
) -> int:
    where = (
        (charge_attempts.c.tenant_id == ctx.tenant_id)
        & (charge_attempts.c.charge_id == charge_id)
        & (charge_attempts.c.attempt_number == number)
    )
    values: dict[str, Any] = {"status": status}
    if sent:  # the attempt's key was just sent (a lookup sends nothing: it must not move this)
        values["sent_at_ms"] = now_ms
    if reference is not None:
        values["gateway_reference"] = reference
    if resolution is not None:
        values["resolution"], values["resolved_at_ms"] = resolution, now_ms
    if bump_tries:
        values["resolve_tries"] = charge_attempts.c.resolve_tries + 1
    conn.execute(charge_attempts.update().where(where).values(values))
    return int(conn.execute(sa.select(charge_attempts.c.resolve_tries).where(where)).scalar_one())


def _finish_from_charge(charge: Any, detail: str | None) -> Finish:
    if charge.status == "succeeded":
        return Finish(CommandState.SUCCEEDED, 201, charge_view(charge), charge.id, detail)
    assert charge.status == "failed", f"charge {charge.id} is not final"
    return Finish(CommandState.FAILED, 402, charge_view(charge), charge.id, detail)


def _apply_result(
    ctx: StepContext,
    conn: Connection,
    attempt_number: int,
    result: PaymentResult,
    detail: str | None = None,
) -> Transition:
    charge = load_charge(conn, ctx.tenant_id, _rid(ctx), lock=True)
    now_ms = ctx.now_ms()
    if charge.status in ("succeeded", "failed"):
        # Already settled by another source (a webhook, reconciliation): that fact stands.
        return _finish_from_charge(charge, detail or "already settled")
    outcome = result.outcome
    note = f"gateway: {outcome.value}" + (f" ({detail})" if detail else "")
    if outcome is Outcome.SUCCEEDED:
        assert result.reference is not None, "a succeeded payment has a reference"
        _update_attempt(
            conn, ctx, charge.id, attempt_number, "succeeded", result.reference, now_ms, "succeeded"
        )
        settle_charge_succeeded(conn, ctx.tenant_id, charge, result.reference, now_ms)
    elif outcome is Outcome.DECLINED:
        _update_attempt(
            conn, ctx, charge.id, attempt_number, "declined", result.reference, now_ms, "declined"
        )
        settle_charge_failed(conn, ctx.tenant_id, charge, result, now_ms)
    elif outcome is Outcome.PROCESSING:
        tries = _update_attempt(
            conn,
            ctx,
            charge.id,
            attempt_number,
            "processing",
            result.reference,
            now_ms,
            bump_tries=True,
        )
        conn.execute(
            charges.update()
            .where(charges.c.tenant_id == ctx.tenant_id, charges.c.id == charge.id)
            .values(gateway_reference=result.reference, updated_at_ms=now_ms)
        )
        charge = load_charge(conn, ctx.tenant_id, charge.id)
        return Suspend(
            CommandState.AWAITING_OUTCOME,
            "processing",
            202,
            charge_view(charge),
            ctx.services.config.resolve_delay_ms(tries - 1),
            note,
            charge.id,
        )
    elif outcome is Outcome.UNKNOWN:
        return _unknown(ctx, conn, charge, attempt_number, note)
    else:
        assert outcome is Outcome.NOT_EXECUTED
        _update_attempt(conn, ctx, charge.id, attempt_number, "not_executed", None, now_ms)
        body = problem(
            "gateway_unavailable",
            503,
            "Payment gateway unavailable",
            "the gateway did not execute the payment; it will be retried with the same key",
        )
        return Suspend(
            CommandState.RUNNING,
            "attempt_recorded",
            503,
            body,
            ctx.services.config.error_retry_ms,
            note,
            charge.id,
        )
    return _finish_from_charge(load_charge(conn, ctx.tenant_id, charge.id), note)


def _unknown(
    ctx: StepContext,
    conn: Connection,
    charge: Any,
    attempt_number: int,
    note: str,
    *,
    sent: bool = True,
) -> Suspend:
    tries = _update_attempt(
        conn,
        ctx,
        charge.id,
        attempt_number,
        "unknown",
        None,
        ctx.now_ms(),
        bump_tries=True,
        sent=sent,
    )
    return Suspend(
        CommandState.AWAITING_OUTCOME,
        "outcome_unknown",
        202,
        charge_view(charge),
        ctx.services.config.resolve_delay_ms(tries - 1),
        note,
        charge.id,
    )


def settle_charge_succeeded(
    conn: Connection, tenant_id: str, charge: Any, reference: str, now_ms: int
) -> bool:
    """Mark a pending charge succeeded and post its entries, once. Shared with webhooks/reconciliation."""
    changed = conn.execute(
        charges.update()
        .where(
            charges.c.tenant_id == tenant_id,
            charges.c.id == charge.id,
            charges.c.status == "pending",
        )
        .values(status="succeeded", gateway_reference=reference, updated_at_ms=now_ms)
    ).rowcount
    if changed == 0:
        return False
    if charge.invoice_id is None:  # an invoice posted its own sale when it was issued
        accounting.post_charge_sale(
            conn,
            tenant_id,
            charge.id,
            charge.customer_id,
            charge.amount_minor,
            charge.currency,
            now_ms,
        )
    accounting.post_payment_succeeded(
        conn,
        tenant_id,
        reference,
        charge.id,
        charge.customer_id,
        charge.gateway,
        charge.amount_minor,
        charge.currency,
        now_ms,
    )
    return True


def settle_charge_failed(
    conn: Connection, tenant_id: str, charge: Any, result: PaymentResult, now_ms: int
) -> bool:
    changed = conn.execute(
        charges.update()
        .where(
            charges.c.tenant_id == tenant_id,
            charges.c.id == charge.id,
            charges.c.status == "pending",
        )
        .values(
            status="failed",
            gateway_reference=result.reference or charge.gateway_reference,
            failure_code=result.failure_code or "payment_failed",
            failure_message=result.failure_message or "The payment failed.",
            updated_at_ms=now_ms,
        )
    ).rowcount
    return changed == 1
