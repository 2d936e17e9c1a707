"""Collecting open invoices: one charge command per attempt, retries on a schedule (dunning).

Each attempt is the engine command `charge.create` with the permanent business key
`invoice:{invoice_id}:attempt:{n}`, so an attempt is one payment intent forever: a worker that
resumes it after a crash (or a second worker racing the first) joins the same command and can
never pay twice (I1, I6). The charge carries `invoice_id`, so it posts only the payment entry; the
sale was posted when the invoice was issued.

Claiming: `FOR UPDATE SKIP LOCKED` on open invoices whose `next_attempt_at_ms` has come. The claim
records attempt n (unique per invoice) and pushes `next_attempt_at_ms` out by a lease; if the
worker dies, the invoice comes due again after the lease and the SAME attempt (same key) resumes.
A new attempt number is only created after the previous attempt is known to have failed.

Outcomes: succeeded -> invoice `paid` (subscription back to `active`); declined -> the subscription
is `past_due` and the next attempt is scheduled after `dunning_delays_ms[n-1]`; after the last
delay is used up, the invoice is `uncollectible`. Unknown outcomes keep the attempt pending: the
recovery worker finishes the charge command and the next claim learns its outcome by replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.config import BillingConfig
from billkeep.domain.errors import (
    BillkeepError,
    IdempotencyKeyInUse,
    LeaseLost,
    NotFound,
    ValidationFailed,
)
from billkeep.engine.executor import CommandIncomplete, CommandResult, Executor
from billkeep.storage.database import Database
from billkeep.storage.tables.billing import invoice_attempts, invoices, subscriptions
from billkeep.storage.tables.core import charges

__all__ = [
    "AttemptClaim",
    "ChargeTally",
    "attempt_business_key",
    "claim_collectable",
    "collect_due_invoices",
    "mark_invoice_paid_for_charge",
    "record_attempt_failed",
]

CHARGE_OPERATION = "charge.create"


def attempt_business_key(invoice_id: str, attempt_number: int) -> str:
    return f"invoice:{invoice_id}:attempt:{attempt_number}"


@dataclass(frozen=True, slots=True)
class AttemptClaim:
    tenant_id: str
    invoice_id: str
    attempt_number: int
    customer_id: str
    total_minor: int
    currency: str

    @property
    def business_key(self) -> str:
        return attempt_business_key(self.invoice_id, self.attempt_number)

    def charge_request(self) -> dict[str, Any]:
        # Deterministic per attempt: a resumed attempt sends the same request (same fingerprint).
        return {
            "customer_id": self.customer_id,
            "amount": self.total_minor,
            "currency": self.currency,
            "invoice_id": self.invoice_id,
            "description": f"Invoice {self.invoice_id}",
            "metadata": {"invoice_id": self.invoice_id, "attempt": str(self.attempt_number)},
        }


@dataclass
class ChargeTally:
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0

    def add(self, other: ChargeTally) -> None:
        self.attempted += other.attempted
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.pending += other.pending


# --- claiming ------------------------------------------------------------------------------------


def _pending_attempt(conn: Connection, tenant_id: str, invoice_id: str) -> int | None:
    return conn.execute(
        sa.select(invoice_attempts.c.attempt_number).where(
            invoice_attempts.c.tenant_id == tenant_id,
            invoice_attempts.c.invoice_id == invoice_id,
            invoice_attempts.c.status == "pending",
        )
    ).scalar_one_or_none()


def claim_collectable(
    conn: Connection, now_ms: int, config: BillingConfig, tenant_id: str | None = None
) -> list[AttemptClaim]:
    """Lease a batch of open invoices due for an attempt; each gets its attempt row."""
    query = sa.select(invoices).where(
        invoices.c.status == "open", invoices.c.next_attempt_at_ms <= now_ms
    )
    if tenant_id is not None:
        query = query.where(invoices.c.tenant_id == tenant_id)
    query = query.order_by(invoices.c.next_attempt_at_ms).limit(config.charge_batch_size)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claims: list[AttemptClaim] = []
    for invoice in conn.execute(query).all():
        number = _pending_attempt(conn, invoice.tenant_id, invoice.id)
        if number is None:
            number = invoice.attempt_count + 1
            conn.execute(
                invoice_attempts.insert().values(
                    tenant_id=invoice.tenant_id,
                    invoice_id=invoice.id,
                    attempt_number=number,
                    business_key=attempt_business_key(invoice.id, number),
                    command_id=None,
                    charge_id=None,
                    status="pending",
                    failure_code=None,
                    created_at_ms=now_ms,
                    resolved_at_ms=None,
                )
            )
        conn.execute(
            invoices.update()
            .where(invoices.c.tenant_id == invoice.tenant_id, invoices.c.id == invoice.id)
            .values(
                attempt_count=number,
                next_attempt_at_ms=now_ms + config.charge_lease_ms,
                updated_at_ms=now_ms,
            )
        )
        claims.append(
            AttemptClaim(
                invoice.tenant_id,
                invoice.id,
                number,
                invoice.customer_id,
                invoice.total_minor,
                invoice.currency,
            )
        )
    return claims


# --- outcomes ------------------------------------------------------------------------------------


def _lock_invoice(conn: Connection, tenant_id: str, invoice_id: str) -> Any:
    query = sa.select(invoices).where(
        invoices.c.tenant_id == tenant_id, invoices.c.id == invoice_id
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no invoice {invoice_id}")
    return row


def _refresh_subscription_status(
    conn: Connection, tenant_id: str, subscription_id: str, now_ms: int
) -> None:
    """past_due while any of its invoices is unpaid after a declined attempt, else active."""
    declined_unpaid = conn.execute(
        sa.select(sa.func.count())
        .select_from(invoices)
        .where(
            invoices.c.tenant_id == tenant_id,
            invoices.c.subscription_id == subscription_id,
            invoices.c.status.in_(("open", "uncollectible")),
            sa.exists().where(
                invoice_attempts.c.tenant_id == invoices.c.tenant_id,
                invoice_attempts.c.invoice_id == invoices.c.id,
                invoice_attempts.c.status == "failed",
            ),
        )
    ).scalar_one()
    status = "past_due" if declined_unpaid else "active"
    conn.execute(
        subscriptions.update()
        .where(
            subscriptions.c.tenant_id == tenant_id,
            subscriptions.c.id == subscription_id,
            subscriptions.c.status != status,
        )
        .values(status=status, updated_at_ms=now_ms)
    )


def _settle_paid(conn: Connection, invoice: Any, charge_id: str, now_ms: int) -> bool:
    changed = conn.execute(
        invoices.update()
        .where(
            invoices.c.tenant_id == invoice.tenant_id,
            invoices.c.id == invoice.id,
            invoices.c.status.in_(("open", "uncollectible")),
        )
        .values(
            status="paid",
            amount_paid_minor=invoice.total_minor,
            charge_id=charge_id,
            next_attempt_at_ms=None,
            paid_at_ms=now_ms,
            updated_at_ms=now_ms,
        )
    ).rowcount
    _refresh_subscription_status(conn, invoice.tenant_id, invoice.subscription_id, now_ms)
    return changed == 1


def mark_invoice_paid_for_charge(
    conn: Connection, tenant_id: str, charge_id: str, now_ms: int | None = None
) -> bool:
    """A charge settled as succeeded (API answer, webhook, reconciliation, recovery worker): if it
    pays an invoice, mark the invoice paid, once. Returns True when this call changed it.

    Call it in the transaction that settles the charge (or any later one); it is idempotent.
    """
    charge = conn.execute(
        sa.select(charges.c.invoice_id, charges.c.status, charges.c.updated_at_ms).where(
            charges.c.tenant_id == tenant_id, charges.c.id == charge_id
        )
    ).first()
    if charge is None or charge.invoice_id is None or charge.status != "succeeded":
        return False
    at_ms = now_ms if now_ms is not None else charge.updated_at_ms
    invoice = _lock_invoice(conn, tenant_id, charge.invoice_id)
    conn.execute(
        invoice_attempts.update()
        .where(
            invoice_attempts.c.tenant_id == tenant_id,
            invoice_attempts.c.invoice_id == invoice.id,
            invoice_attempts.c.status == "pending",
        )
        .values(status="succeeded", charge_id=charge_id, resolved_at_ms=at_ms)
    )
    if invoice.status == "paid":
        # At most one successful payment per invoice (I6): a second succeeded charge for an
        # already-paid invoice would be a bug upstream, never something to record as paid twice.
        assert invoice.charge_id == charge_id, (
            f"invoice {invoice.id} paid by {invoice.charge_id} and {charge_id}"
        )
        return False
    return _settle_paid(conn, invoice, charge_id, at_ms)


def record_attempt_failed(
    conn: Connection,
    config: BillingConfig,
    tenant_id: str,
    invoice_id: str,
    attempt_number: int,
    failure_code: str,
    charge_id: str | None,
    now_ms: int,
) -> str:
    """A declined (or impossible) attempt: schedule the next one or give up. Returns the invoice
    status afterwards."""
    invoice = _lock_invoice(conn, tenant_id, invoice_id)
    changed = conn.execute(
        invoice_attempts.update()
        .where(
            invoice_attempts.c.tenant_id == tenant_id,
            invoice_attempts.c.invoice_id == invoice_id,
            invoice_attempts.c.attempt_number == attempt_number,
            invoice_attempts.c.status == "pending",
        )
        .values(
            status="failed", failure_code=failure_code, charge_id=charge_id, resolved_at_ms=now_ms
        )
    ).rowcount
    if changed == 0 or invoice.status != "open":
        return str(invoice.status)  # already recorded (a racing worker) or settled otherwise
    delays = config.dunning_delays_ms
    if attempt_number <= len(delays):
        status, next_at = "open", now_ms + delays[attempt_number - 1]
    else:
        status, next_at = "uncollectible", None
    conn.execute(
        invoices.update()
        .where(invoices.c.tenant_id == tenant_id, invoices.c.id == invoice_id)
        .values(status=status, next_attempt_at_ms=next_at, updated_at_ms=now_ms)
    )
    _refresh_subscription_status(conn, tenant_id, invoice.subscription_id, now_ms)
    return status


def _record_pending(
    conn: Connection, claim: AttemptClaim, result: CommandResult | None, retry_at_ms: int
) -> None:
    values: dict[str, Any] = {}
    if result is not None:
        values["command_id"] = result.command_id
        if result.resource_id is not None:
            values["charge_id"] = result.resource_id
    if values:
        conn.execute(
            invoice_attempts.update()
            .where(
                invoice_attempts.c.tenant_id == claim.tenant_id,
                invoice_attempts.c.invoice_id == claim.invoice_id,
                invoice_attempts.c.attempt_number == claim.attempt_number,
            )
            .values(values)
        )
    conn.execute(
        invoices.update()
        .where(
            invoices.c.tenant_id == claim.tenant_id,
            invoices.c.id == claim.invoice_id,
            invoices.c.status == "open",
        )
        .values(next_attempt_at_ms=retry_at_ms)
    )


def _apply_result(
    conn: Connection,
    config: BillingConfig,
    claim: AttemptClaim,
    result: CommandResult,
    now_ms: int,
) -> str:
    """Returns "succeeded" | "failed" | "pending"."""
    body: Mapping[str, Any] = result.body()
    if result.final and result.status == 201 and body.get("status") == "succeeded":
        conn.execute(
            invoice_attempts.update()
            .where(
                invoice_attempts.c.tenant_id == claim.tenant_id,
                invoice_attempts.c.invoice_id == claim.invoice_id,
                invoice_attempts.c.attempt_number == claim.attempt_number,
            )
            .values(command_id=result.command_id)
        )
        mark_invoice_paid_for_charge(conn, claim.tenant_id, str(body["id"]), now_ms)
        return "succeeded"
    if result.final:
        failure = body.get("failure") or {}
        code = str(failure.get("code") or body.get("code") or "payment_failed")
        charge_id = body.get("id") if body.get("object") == "charge" else None
        _record_pending(conn, claim, result, now_ms)
        record_attempt_failed(
            conn,
            config,
            claim.tenant_id,
            claim.invoice_id,
            claim.attempt_number,
            code,
            charge_id,
            now_ms,
        )
        return "failed"
    retry_ms = max(result.retry_after_ms or 0, config.charge_lease_ms)
    _record_pending(conn, claim, result, now_ms + retry_ms)
    return "pending"


def _charge(
    db: Database,
    executor: Executor,
    config: BillingConfig,
    claim: AttemptClaim,
    now_ms: int,
    actor: str | None,
) -> str:
    try:
        result = executor.execute(
            claim.tenant_id,
            CHARGE_OPERATION,
            claim.charge_request(),
            business_key=claim.business_key,
            actor=actor,
        )
    except ValidationFailed as exc:
        # Nothing was recorded (e.g. the customer has no payment method): a failed attempt.
        code = "payment_method_missing" if "payment_method" in exc.detail else "invalid_charge"

        def fail(conn: Connection) -> str:
            record_attempt_failed(
                conn,
                config,
                claim.tenant_id,
                claim.invoice_id,
                claim.attempt_number,
                code,
                None,
                now_ms,
            )
            return "failed"

        return db.run_write(fail)
    except (IdempotencyKeyInUse, LeaseLost, CommandIncomplete):
        return "pending"  # another worker has it, or it will be resumed; the lease brings it back
    except BillkeepError:
        return "pending"
    return db.run_write(lambda conn: _apply_result(conn, config, claim, result, now_ms))


def collect_due_invoices(
    db: Database,
    executor: Executor,
    now_ms: int,
    config: BillingConfig,
    *,
    tenant_id: str | None = None,
    actor: str | None = None,
) -> ChargeTally:
    """Claim one batch of invoices due for an attempt and charge each. `attempted == 0` means
    nothing due was left unclaimed. `actor` names who runs the charge commands in their history
    (the billing run's own actor; None: the executor's default)."""
    claims = db.run_write(lambda conn: claim_collectable(conn, now_ms, config, tenant_id))
    tally = ChargeTally()
    for claim in claims:
        tally.attempted += 1
        outcome = _charge(db, executor, config, claim, now_ms, actor)
        if outcome == "succeeded":
            tally.succeeded += 1
        elif outcome == "failed":
            tally.failed += 1
        else:
            tally.pending += 1
    return tally
