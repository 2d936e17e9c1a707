"""Bringing the local objects (charge, refunds, ledger) in line with a payment's monotonic state.

Every function here is idempotent and only ever moves objects forward: the charge from pending (or
failed, which a later success supersedes) to succeeded; refunds from pending to succeeded; ledger
entries are posted by business-fact key (`payment:{pi}:succeeded`, `refund:{re}`, `dispute:{dp}`)
so a fact learned from the API response, a webhook and reconciliation posts once.

Refunds the gateway reports that no billkeep refund command made (a refund from the gateway's
dashboard) are recorded in `gateway_refunds`, counted in the charge's `amount_refunded` and posted
to the ledger like any refund: the money left, and the books must say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.payment_state import (
    Fact,
    PaymentState,
    PaymentStatus,
    PaymentSucceeded,
    RefundObserved,
    RefundStatus,
    apply,
)
from billkeep.engine import accounting
from billkeep.engine.operations.charges import (
    load_charge,
    settle_charge_failed,
    settle_charge_succeeded,
)
from billkeep.engine.operations.refunds import settle_refund_succeeded
from billkeep.gateways.protocol import Outcome, PaymentResult
from billkeep.storage.database import insert_ignoring_conflicts
from billkeep.storage.tables.core import charges, refunds
from billkeep.storage.tables.reconciliation import gateway_refunds
from billkeep.webhooks.state_store import load_state, save_state

__all__ = [
    "find_charge",
    "fold_local_knowledge",
    "has_unreferenced_refund_in_flight",
    "known_refund_ids",
    "learn_facts",
    "sync_local",
]


def find_charge(
    conn: Connection, tenant_id: str, reference: str | None, command_ref: str | None
) -> Any | None:
    """The local charge a gateway payment belongs to: by its reference, else by the command that
    made it (metadata[billkeep_command]), which covers a webhook racing the charge command."""
    if reference is not None:
        row = conn.execute(
            sa.select(charges.c.id).where(
                charges.c.tenant_id == tenant_id, charges.c.gateway_reference == reference
            )
        ).first()
        if row is not None:
            return load_charge(conn, tenant_id, row.id, lock=True)
    if command_ref is not None:
        row = conn.execute(
            sa.select(charges.c.id).where(
                charges.c.tenant_id == tenant_id, charges.c.command_id == command_ref
            )
        ).first()
        if row is not None:
            return load_charge(conn, tenant_id, row.id, lock=True)
    return None


def _local_refund(
    conn: Connection, tenant_id: str, charge_id: str, reference: str, command_ref: str | None
) -> Any | None:
    match = refunds.c.gateway_reference == reference
    if command_ref is not None:
        match = sa.or_(match, refunds.c.command_id == command_ref)
    return conn.execute(
        sa.select(refunds).where(
            refunds.c.tenant_id == tenant_id, refunds.c.charge_id == charge_id, match
        )
    ).first()


def known_refund_ids(conn: Connection, tenant_id: str, charge_id: str) -> set[str]:
    local = conn.execute(
        sa.select(refunds.c.gateway_reference).where(
            refunds.c.tenant_id == tenant_id,
            refunds.c.charge_id == charge_id,
            refunds.c.gateway_reference.is_not(None),
        )
    ).scalars()
    external = conn.execute(
        sa.select(gateway_refunds.c.reference).where(
            gateway_refunds.c.tenant_id == tenant_id, gateway_refunds.c.charge_id == charge_id
        )
    ).scalars()
    return {str(r) for r in local} | {str(r) for r in external}


def has_unreferenced_refund_in_flight(conn: Connection, tenant_id: str, charge_id: str) -> bool:
    """A billkeep refund command is between its gateway call and recording the answer: an unknown
    refund at the gateway may be that one, so it must not be mistaken for a dashboard refund."""
    row = conn.execute(
        sa.select(refunds.c.id).where(
            refunds.c.tenant_id == tenant_id,
            refunds.c.charge_id == charge_id,
            refunds.c.status == "pending",
            refunds.c.gateway_reference.is_(None),
        )
    ).first()
    return row is not None


def fold_local_knowledge(
    conn: Connection, tenant_id: str, charge: Any, state: PaymentState
) -> PaymentState:
    """Join what the local rows already know (e.g. a success learned from the API response)."""
    if charge.status == "succeeded":
        state = apply(state, PaymentSucceeded(charge.amount_minor)).state
    rows = conn.execute(
        sa.select(refunds.c.gateway_reference, refunds.c.amount_minor).where(
            refunds.c.tenant_id == tenant_id,
            refunds.c.charge_id == charge.id,
            refunds.c.status == "succeeded",
            refunds.c.gateway_reference.is_not(None),
        )
    ).all()
    for reference, amount_minor in rows:
        state = apply(state, RefundObserved(reference, amount_minor, RefundStatus.SUCCEEDED)).state
    return state


def learn_facts(
    conn: Connection,
    tenant_id: str,
    gateway_id: str,
    charge: Any,
    reference: str,
    facts: Sequence[Fact],
    refund_commands: Mapping[str, str],
    now_ms: int,
) -> list[str]:
    """Join facts about payment `reference` (of `charge`, whose row lock the caller holds) into
    its stored state, move the local rows forward and save the state: what a webhook does with
    an event's facts, for facts learned elsewhere (reconciliation). Returns what changed."""
    state, exists = load_state(conn, tenant_id, gateway_id, reference)
    state = fold_local_knowledge(conn, tenant_id, charge, state)
    for fact in facts:
        state = apply(state, fact).state
    if state.status is PaymentStatus.SUCCEEDED and state.amount_received_minor is None:
        # A refund or dispute proves the payment succeeded; the amount is the charge's.
        state = apply(state, PaymentSucceeded(charge.amount_minor)).state
    changes = sync_local(conn, tenant_id, gateway_id, charge, state, refund_commands, now_ms)
    save_state(conn, tenant_id, gateway_id, charge.id, state, exists=exists, now_ms=now_ms)
    return changes


def sync_local(
    conn: Connection,
    tenant_id: str,
    gateway_id: str,
    charge: Any,
    state: PaymentState,
    refund_commands: Mapping[str, str],
    now_ms: int,
) -> list[str]:
    """Move the local rows forward to what `state` knows; return what changed (empty: nothing)."""
    changes: list[str] = []
    changes += _sync_charge_status(conn, tenant_id, charge, state, now_ms)
    charge = load_charge(conn, tenant_id, charge.id)
    if state.status is PaymentStatus.SUCCEEDED:
        for refund in state.refunds:
            if refund.status is RefundStatus.SUCCEEDED:
                changes += _sync_refund(
                    conn,
                    tenant_id,
                    gateway_id,
                    charge,
                    state.reference,
                    refund.refund_id,
                    refund.amount_minor,
                    refund_commands.get(refund.refund_id),
                    now_ms,
                )
        for dispute in state.disputes:
            posted = accounting.post_dispute(
                conn,
                tenant_id,
                dispute.dispute_id,
                charge.id,
                charge.gateway,
                dispute.amount_minor,
                charge.currency,
                now_ms,
            )
            if posted.created:
                changes.append(f"dispute {dispute.dispute_id} posted")
    return changes


def _sync_charge_status(
    conn: Connection, tenant_id: str, charge: Any, state: PaymentState, now_ms: int
) -> list[str]:
    if state.status is PaymentStatus.SUCCEEDED and charge.status != "succeeded":
        if charge.status == "failed":
            # A success supersedes an earlier failed attempt of the same intent (payment_state's
            # order): reopen, then settle through the shared helper so entries post once.
            conn.execute(
                charges.update()
                .where(
                    charges.c.tenant_id == tenant_id,
                    charges.c.id == charge.id,
                    charges.c.status == "failed",
                )
                .values(status="pending", failure_code=None, failure_message=None)
            )
            charge = load_charge(conn, tenant_id, charge.id)
        if settle_charge_succeeded(conn, tenant_id, charge, state.reference, now_ms):
            return [f"charge {charge.id} succeeded"]
        return []
    if state.status is PaymentStatus.FAILED and charge.status == "pending":
        failure = min(state.failures, key=lambda f: (f.code, f.message))
        result = PaymentResult(
            Outcome.DECLINED,
            state.reference,
            failure_code=failure.code,
            failure_message=failure.message or None,
        )
        if settle_charge_failed(conn, tenant_id, charge, result, now_ms):
            return [f"charge {charge.id} failed ({failure.code})"]
    return []


def _sync_refund(
    conn: Connection,
    tenant_id: str,
    gateway_id: str,
    charge: Any,
    payment_reference: str,
    refund_reference: str,
    amount_minor: int,
    command_ref: str | None,
    now_ms: int,
) -> list[str]:
    local = _local_refund(conn, tenant_id, charge.id, refund_reference, command_ref)
    if local is not None:
        if local.status == "pending" and settle_refund_succeeded(
            conn, tenant_id, local, charge, refund_reference, now_ms
        ):
            return [f"refund {local.id} succeeded"]
        return []
    inserted = conn.execute(
        insert_ignoring_conflicts(conn.dialect.name, gateway_refunds)
        .values(
            tenant_id=tenant_id,
            gateway_id=gateway_id,
            reference=refund_reference,
            charge_id=charge.id,
            payment_reference=payment_reference,
            amount_minor=amount_minor,
            currency=charge.currency,
            status="succeeded",
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
        )
        .returning(gateway_refunds.c.reference)
    ).first()
    if inserted is None:
        return []
    conn.execute(
        charges.update()
        .where(charges.c.tenant_id == tenant_id, charges.c.id == charge.id)
        .values(
            amount_refunded_minor=charges.c.amount_refunded_minor + amount_minor,
            updated_at_ms=now_ms,
        )
    )
    accounting.post_refund_succeeded(
        conn,
        tenant_id,
        refund_reference,
        charge.id,
        charge.gateway,
        amount_minor,
        charge.currency,
        now_ms,
    )
    return [f"refund {refund_reference} made outside billkeep recorded and posted"]
