"""refund.create: never more than what is left to refund, whatever the concurrency (I7).

Recovery points:
- `started`: lock the charge row, check it is refundable and that the amount fits under what is
  left (succeeded + in-flight refunds all count), record the refund -> `refund_recorded`.
  Refusals are final outcomes: 409 charge_not_refundable, 422 refund_exceeds_charge.
- `refund_recorded`: call the gateway with the refund's deterministic key; record the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.commands import CommandState
from billkeep.domain.errors import NotFound
from billkeep.domain.ids import new_id
from billkeep.domain.money import parse_amount_minor
from billkeep.engine import accounting
from billkeep.engine.operations.charges import load_charge
from billkeep.engine.operations.validation import (
    check_unknown_fields,
    gather,
    optional_string,
    required_string,
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
from billkeep.engine.views import refund_view
from billkeep.gateways.protocol import GatewayLookupFailed, Outcome, RefundRequest, RefundResult
from billkeep.storage.tables.core import charges, refunds

__all__ = ["CreateRefund", "refund_key"]

# Refunds in these states hold part of the charge: a refund in flight must count, or two
# concurrent refunds could both pass the check.
_HOLDING_STATES = ("pending", "succeeded")


def refund_key(command_id: str) -> str:
    return f"billkeep-{command_id}-refund"


class CreateRefund:
    name = "refund.create"

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        check_unknown_fields(request, {"charge_id", "amount", "reason"})
        return gather(
            {
                "charge_id": lambda: required_string(request, "charge_id"),
                "amount": lambda: (
                    None if request.get("amount") is None else parse_amount_minor(request["amount"])
                ),
                "reason": lambda: optional_string(request, "reason"),
            }
        )

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        found = conn.execute(
            sa.select(charges.c.id).where(
                charges.c.tenant_id == tenant_id, charges.c.id == request["charge_id"]
            )
        ).first()
        if found is None:
            raise NotFound(f"no charge {request['charge_id']}")

    def steps(self) -> Mapping[str, Step]:
        return {
            "started": LocalStep(self._reserve),
            "refund_recorded": ForeignStep(self._call, self._record),
        }

    def _reserve(self, ctx: StepContext, conn: Connection) -> Transition:
        # The row lock serialises refunds of one charge (SQLite: BEGIN IMMEDIATE does).
        charge = load_charge(conn, ctx.tenant_id, ctx.request["charge_id"], lock=True)
        if charge.status != "succeeded":
            body = problem(
                "charge_not_refundable",
                409,
                "Charge cannot be refunded",
                f"charge {charge.id} is {charge.status}; only succeeded charges can be refunded",
            )
            return Finish(CommandState.REJECTED, 409, body, detail="charge_not_refundable")
        held = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(refunds.c.amount_minor), 0)).where(
                refunds.c.tenant_id == ctx.tenant_id,
                refunds.c.charge_id == charge.id,
                refunds.c.status.in_(_HOLDING_STATES),
            )
        ).scalar_one()
        left_minor = charge.amount_minor - int(held)
        amount_minor = ctx.request["amount"] if ctx.request["amount"] is not None else left_minor
        if amount_minor <= 0 or amount_minor > left_minor:
            body = problem(
                "refund_exceeds_charge",
                422,
                "Refund exceeds what is left to refund",
                f"requested {amount_minor}, left to refund {left_minor} {charge.currency}",
                [{"field": "amount", "message": f"at most {left_minor}"}],
            )
            return Finish(CommandState.REJECTED, 422, body, detail="refund_exceeds_charge")
        now_ms = ctx.now_ms()
        refund_id = new_id("re", now_ms)
        conn.execute(
            refunds.insert().values(
                tenant_id=ctx.tenant_id,
                id=refund_id,
                charge_id=charge.id,
                command_id=ctx.command_id,
                amount_minor=amount_minor,
                currency=charge.currency,
                status="pending",
                reason=ctx.request["reason"],
                gateway_idempotency_key=refund_key(ctx.command_id),
                gateway_reference=None,
                created_at_ms=now_ms,
                updated_at_ms=now_ms,
            )
        )
        return Advance("refund_recorded", detail=f"reserved {amount_minor}", resource_id=refund_id)

    def _call(self, ctx: StepContext) -> RefundResult:
        """Send the refund with its key, or, once the gateway may have forgotten the key, first
        look for a refund this command already made (never refund twice)."""

        def read(conn: Connection) -> tuple[Any, Any]:
            refund = _load_refund(conn, ctx)
            return refund, load_charge(conn, ctx.tenant_id, refund.charge_id)

        refund, charge = ctx.services.db.run_read(read)
        gateway = ctx.services.gateways.for_tenant(ctx.tenant_id, charge.gateway)
        request = RefundRequest(
            idempotency_key=refund.gateway_idempotency_key,
            command_ref=ctx.command_id,
            payment_reference=charge.gateway_reference,
            amount_minor=refund.amount_minor,
            currency=refund.currency,
        )
        retention_ms = gateway.idempotency_retention_ms - ctx.services.config.gateway_key_margin_ms
        if ctx.now_ms() < refund.created_at_ms + retention_ms:
            return gateway.create_refund(request)  # the gateway replays or performs it once
        try:
            found = gateway.find_refunds(charge.gateway_reference, ctx.command_id)
        except GatewayLookupFailed as exc:
            return RefundResult(Outcome.UNKNOWN, detail=f"lookup failed: {exc}")
        for outcome in (Outcome.SUCCEEDED, Outcome.PROCESSING):
            for result in found:
                if result.outcome is outcome:
                    return result
        # Proven absent. Sending the SAME key again is safe even if a stale call with it is
        # still in flight somewhere: the gateway dedups the two by that key.
        return gateway.create_refund(request)

    def _record(self, ctx: StepContext, conn: Connection, result: RefundResult) -> Transition:
        refund = _load_refund(conn, ctx)
        charge = load_charge(conn, ctx.tenant_id, refund.charge_id, lock=True)
        now_ms = ctx.now_ms()
        note = f"gateway: {result.outcome.value}"
        if refund.status == "succeeded":
            return Finish(
                CommandState.SUCCEEDED, 201, refund_view(refund), refund.id, "already settled"
            )
        if result.outcome is Outcome.SUCCEEDED:
            assert result.reference is not None
            settle_refund_succeeded(conn, ctx.tenant_id, refund, charge, result.reference, now_ms)
            return Finish(
                CommandState.SUCCEEDED, 201, refund_view(_load_refund(conn, ctx)), refund.id, note
            )
        if result.outcome is Outcome.DECLINED:
            _set_refund(conn, ctx.tenant_id, refund.id, "failed", result.reference, now_ms)
            return Finish(
                CommandState.FAILED, 402, refund_view(_load_refund(conn, ctx)), refund.id, note
            )
        if result.outcome is Outcome.NOT_EXECUTED:
            body = problem(
                "gateway_unavailable",
                503,
                "Payment gateway unavailable",
                "the gateway did not execute the refund; it will be retried with the same key",
            )
            return Suspend(
                CommandState.RUNNING,
                "refund_recorded",
                503,
                body,
                ctx.services.config.error_retry_ms,
                note,
            )
        # Unknown or pending: the same key, asked again later, tells the outcome without a 2nd refund.
        return Suspend(
            CommandState.AWAITING_OUTCOME,
            "refund_recorded",
            202,
            refund_view(refund),
            ctx.services.config.resolve_delay_ms(max(0, ctx.attempts - 1)),
            note,
        )


def _load_refund(conn: Connection, ctx: StepContext) -> Any:
    assert ctx.resource_id is not None
    return conn.execute(
        sa.select(refunds).where(
            refunds.c.tenant_id == ctx.tenant_id, refunds.c.id == ctx.resource_id
        )
    ).one()


def _set_refund(
    conn: Connection,
    tenant_id: str,
    refund_id: str,
    status: str,
    reference: str | None,
    now_ms: int,
) -> int:
    return int(
        conn.execute(
            refunds.update()
            .where(
                refunds.c.tenant_id == tenant_id,
                refunds.c.id == refund_id,
                refunds.c.status == "pending",
            )
            .values(status=status, gateway_reference=reference, updated_at_ms=now_ms)
        ).rowcount
    )


def settle_refund_succeeded(
    conn: Connection, tenant_id: str, refund: Any, charge: Any, reference: str, now_ms: int
) -> bool:
    """Mark a pending refund succeeded, count it on the charge and post it, once."""
    if _set_refund(conn, tenant_id, refund.id, "succeeded", reference, now_ms) == 0:
        return False
    conn.execute(
        charges.update()
        .where(charges.c.tenant_id == tenant_id, charges.c.id == charge.id)
        .values(
            amount_refunded_minor=charges.c.amount_refunded_minor + refund.amount_minor,
            updated_at_ms=now_ms,
        )
    )
    accounting.post_refund_succeeded(
        conn,
        tenant_id,
        reference,
        refund.id,
        charge.gateway,
        refund.amount_minor,
        refund.currency,
        now_ms,
    )
    return True
