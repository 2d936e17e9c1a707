"""Builders for the reconciliation and webhook tests: Stripe event envelopes, signed with the
`stripe` package's own HMAC, local charges in a given state, and snapshots of local state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import stripe

from billkeep.domain.ids import new_id
from billkeep.storage.database import Database
from billkeep.storage.tables.core import accounts, charges, journal_entries, postings
from billkeep.storage.tables.reconciliation import gateway_refunds, payment_states

__all__ = [
    "EventFactory",
    "body_of",
    "insert_charge",
    "local_snapshot",
    "stripe_signature_header",
]


def stripe_signature_header(payload: bytes, secrets: list[str], timestamp_s: int) -> str:
    """The header Stripe sends, each v1 computed by the stripe package itself."""
    text = payload.decode("utf-8")
    parts = [f"t={timestamp_s}"]
    for secret in secrets:
        parts.append(
            "v1=" + stripe.WebhookSignature._compute_signature(f"{timestamp_s}.{text}", secret)
        )
    return ",".join(parts)


@dataclass
class EventFactory:
    """Stripe event envelopes about one payment intent."""

    reference: str
    amount: int
    currency: str = "usd"
    command_ref: str | None = None
    charge_id: str = "ch_test"

    def _event(self, event_id: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": 1_767_225_600,
            "livemode": False,
            "data": {"object": obj},
        }

    def _intent(self, status: str, **extra: Any) -> dict[str, Any]:
        metadata = {"billkeep_command": self.command_ref} if self.command_ref else {}
        return {
            "id": self.reference,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_received": self.amount if status == "succeeded" else 0,
            "currency": self.currency,
            "status": status,
            "latest_charge": self.charge_id,
            "metadata": metadata,
            "last_payment_error": None,
            **extra,
        }

    def succeeded(self, event_id: str = "evt_succeeded") -> dict[str, Any]:
        return self._event(event_id, "payment_intent.succeeded", self._intent("succeeded"))

    def processing(self, event_id: str = "evt_processing") -> dict[str, Any]:
        return self._event(event_id, "payment_intent.processing", self._intent("processing"))

    def failed(self, event_id: str = "evt_failed", code: str = "card_declined") -> dict[str, Any]:
        error = {"type": "card_error", "code": code, "decline_code": None, "message": "declined"}
        intent = self._intent("requires_payment_method", last_payment_error=error)
        return self._event(event_id, "payment_intent.payment_failed", intent)

    def refund_object(
        self, refund_id: str, amount: int, status: str, command_ref: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "currency": self.currency,
            "charge": self.charge_id,
            "payment_intent": self.reference,
            "status": status,
            "metadata": {"billkeep_command": command_ref} if command_ref else {},
        }

    def refund(
        self,
        event_id: str,
        refund_id: str,
        amount: int,
        status: str,
        event_type: str = "refund.created",
        command_ref: str | None = None,
    ) -> dict[str, Any]:
        return self._event(
            event_id, event_type, self.refund_object(refund_id, amount, status, command_ref)
        )

    def charge_refunded(self, event_id: str, refunds: list[tuple[str, int]]) -> dict[str, Any]:
        listed = [self.refund_object(r, a, "succeeded") for r, a in refunds]
        charge = {
            "id": self.charge_id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount,
            "amount_refunded": sum(a for _, a in refunds),
            "currency": self.currency,
            "payment_intent": self.reference,
            "refunds": {"object": "list", "data": listed, "has_more": False},
        }
        return self._event(event_id, "charge.refunded", charge)

    def dispute(self, event_id: str, dispute_id: str, amount: int) -> dict[str, Any]:
        obj = {
            "id": dispute_id,
            "object": "dispute",
            "amount": amount,
            "currency": self.currency,
            "charge": self.charge_id,
            "payment_intent": self.reference,
            "status": "needs_response",
        }
        return self._event(event_id, "charge.dispute.created", obj)


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def insert_charge(
    db: Database,
    tenant_id: str,
    *,
    amount_minor: int,
    gateway: str,
    now_ms: int,
    reference: str | None = None,
    command_id: str | None = None,
    status: str = "pending",
    currency: str = "usd",
    customer_id: str = "cus_test",
) -> tuple[str, str]:
    """A local charge row as the charge command leaves it (pending: outcome not known yet)."""
    charge_id = new_id("ch", now_ms)
    command_id = command_id or new_id("cmd", now_ms)
    with db.write() as conn:
        conn.execute(
            charges.insert().values(
                tenant_id=tenant_id,
                id=charge_id,
                command_id=command_id,
                customer_id=customer_id,
                amount_minor=amount_minor,
                currency=currency,
                status=status,
                amount_refunded_minor=0,
                gateway=gateway,
                gateway_reference=reference,
                payment_method="pm_card_visa",
                failure_code=None,
                failure_message=None,
                description=None,
                metadata="{}",
                current_attempt=1,
                invoice_id=None,
                created_at_ms=now_ms,
                updated_at_ms=now_ms,
            )
        )
    return charge_id, command_id


def _fact_key(entry_key: str) -> str:
    return "charge:*:sale" if entry_key.startswith("charge:") else entry_key


def local_snapshot(db: Database, tenant_id: str) -> dict[str, Any]:
    """Everything the processing of webhooks may change for a tenant, id-free and comparable."""
    with db.read() as conn:
        charge_rows = conn.execute(
            sa.select(
                charges.c.status,
                charges.c.amount_refunded_minor,
                charges.c.gateway_reference,
                charges.c.failure_code,
            ).where(charges.c.tenant_id == tenant_id)
        ).all()
        states = conn.execute(
            sa.select(payment_states.c.reference, payment_states.c.state).where(
                payment_states.c.tenant_id == tenant_id
            )
        ).all()
        external = conn.execute(
            sa.select(gateway_refunds.c.reference, gateway_refunds.c.amount_minor).where(
                gateway_refunds.c.tenant_id == tenant_id
            )
        ).all()
        entries = conn.execute(
            sa.select(
                journal_entries.c.entry_key,
                accounts.c.code,
                postings.c.direction,
                postings.c.amount_minor,
            )
            .join(
                postings,
                sa.and_(
                    postings.c.tenant_id == journal_entries.c.tenant_id,
                    postings.c.entry_id == journal_entries.c.id,
                ),
            )
            .join(
                accounts,
                sa.and_(
                    accounts.c.tenant_id == postings.c.tenant_id,
                    accounts.c.id == postings.c.account_id,
                ),
            )
            .where(journal_entries.c.tenant_id == tenant_id)
        ).all()
    return {
        "charges": sorted(tuple(r) for r in charge_rows),
        "states": sorted(tuple(r) for r in states),
        "external_refunds": sorted(tuple(r) for r in external),
        # Charge ids differ between tenants; the entry key's fact is what must match.
        "ledger": sorted((_fact_key(r[0]), *r[1:]) for r in entries),
    }
