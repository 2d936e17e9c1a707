"""Persisting a PaymentState as canonical JSON in `payment_states` (equal states, equal text)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.payment_state import (
    DisputeRecord,
    Failure,
    PaymentState,
    PaymentStatus,
    RefundRecord,
    RefundStatus,
    new_payment,
)
from billkeep.storage.tables.reconciliation import payment_states

__all__ = ["load_state", "save_state", "state_from_json", "state_to_json"]


def state_to_json(state: PaymentState) -> str:
    document = {
        "reference": state.reference,
        "status": state.status.value,
        "amount_received_minor": state.amount_received_minor,
        "failures": sorted([f.code, f.message] for f in state.failures),
        "refunds": [[r.refund_id, r.amount_minor, r.status.value] for r in state.refunds],
        "disputes": [[d.dispute_id, d.amount_minor] for d in state.disputes],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def state_from_json(text: str) -> PaymentState:
    doc: dict[str, Any] = json.loads(text)
    return PaymentState(
        reference=doc["reference"],
        status=PaymentStatus(doc["status"]),
        amount_received_minor=doc["amount_received_minor"],
        failures=frozenset(Failure(code, message) for code, message in doc["failures"]),
        refunds=tuple(RefundRecord(i, a, RefundStatus(s)) for i, a, s in doc["refunds"]),
        disputes=tuple(DisputeRecord(i, a) for i, a in doc["disputes"]),
    )


def _key(tenant_id: str, gateway_id: str, reference: str) -> Any:
    return sa.and_(
        payment_states.c.tenant_id == tenant_id,
        payment_states.c.gateway_id == gateway_id,
        payment_states.c.reference == reference,
    )


def load_state(
    conn: Connection, tenant_id: str, gateway_id: str, reference: str
) -> tuple[PaymentState, bool]:
    """The stored state (or a new one) and whether it was stored."""
    text = conn.execute(
        sa.select(payment_states.c.state).where(_key(tenant_id, gateway_id, reference))
    ).scalar_one_or_none()
    if text is None:
        return new_payment(reference), False
    return state_from_json(text), True


def save_state(
    conn: Connection,
    tenant_id: str,
    gateway_id: str,
    charge_id: str,
    state: PaymentState,
    *,
    exists: bool,
    now_ms: int,
) -> None:
    """Write under the charge's row lock (the caller holds it), so no concurrent writer races."""
    values = {"charge_id": charge_id, "status": state.status.value, "state": state_to_json(state)}
    if exists:
        conn.execute(
            payment_states.update()
            .where(_key(tenant_id, gateway_id, state.reference))
            .values(**values, updated_at_ms=now_ms)
        )
        return
    conn.execute(
        payment_states.insert().values(
            tenant_id=tenant_id,
            gateway_id=gateway_id,
            reference=state.reference,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            **values,
        )
    )
