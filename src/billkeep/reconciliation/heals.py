"""Applying the heals the matcher proposes, idempotently: each runs in its own transaction and
only moves things forward, so re-running a window finds nothing left to heal.

- FinalizeCharge: a local charge still pending whose payment the gateway shows final is settled
  through the engine's shared helpers (entries keyed by the business fact). The charge command,
  still awaiting its outcome, then finishes from the settled charge on its next resume.
- PostFee: the gateway's processing fee, posted keyed by its balance transaction (`fee:{txn}`).
- LearnMoneyOut: a refund or dispute the gateway made that the ledger lacks, learned as a webhook
  for it would be (webhooks.local.learn_facts: the payment's state joined, then sync_local), so a
  fact learned by webhook, refund command and reconciliation posts once. A refund is not learned
  while a billkeep refund of the charge awaits its gateway answer (it may be that refund).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.payment_state import DisputeOpened, Fact, RefundObserved, RefundStatus
from billkeep.engine import accounting
from billkeep.engine.operations.charges import (
    load_charge,
    settle_charge_failed,
    settle_charge_succeeded,
)
from billkeep.gateways.protocol import Outcome, PaymentResult
from billkeep.reconciliation.matching import FinalizeCharge, Heal, LedgerStatus, PostFee
from billkeep.reconciliation.money_out_records import LearnMoneyOut, ReversalKind
from billkeep.storage.tables.reconciliation import staged_gateway_fees, staged_gateway_payments
from billkeep.webhooks import local

__all__ = ["apply_heals"]

RECONCILIATION_FAILURE_CODE = "payment_failed"


def apply_heals(
    conn: Connection, tenant_id: str, run_id: str, heals: Sequence[Heal], now_ms: int
) -> list[str]:
    """Apply in order (finalize before the fee); return the resolutions that took effect."""
    done: list[str] = []
    for heal in heals:
        if isinstance(heal, FinalizeCharge):
            if _finalize(conn, tenant_id, heal, now_ms):
                done.append(f"finalized_{heal.status.value}")
        elif isinstance(heal, LearnMoneyOut):
            if _learn_money_out(conn, tenant_id, heal, now_ms):
                done.append(f"{heal.kind.value}_learned")
        elif _post_fee(conn, tenant_id, run_id, heal, now_ms):
            done.append("fee_posted")
    return done


def _finalize(conn: Connection, tenant_id: str, heal: FinalizeCharge, now_ms: int) -> bool:
    charge = load_charge(conn, tenant_id, heal.resource_id, lock=True)
    if charge.status != "pending":
        return False  # another source settled it meanwhile: that fact stands
    if heal.status is LedgerStatus.SUCCEEDED:
        return settle_charge_succeeded(conn, tenant_id, charge, heal.reference, now_ms)
    result = PaymentResult(
        Outcome.DECLINED,
        heal.reference,
        failure_code=RECONCILIATION_FAILURE_CODE,
        failure_message="The gateway reports this payment failed (found by reconciliation).",
    )
    return settle_charge_failed(conn, tenant_id, charge, result, now_ms)


def _post_fee(conn: Connection, tenant_id: str, run_id: str, heal: PostFee, now_ms: int) -> bool:
    p, f = staged_gateway_payments, staged_gateway_fees
    txns = conn.execute(
        sa.select(f.c.balance_transaction, f.c.fee_minor)
        .join(
            p,
            sa.and_(
                p.c.tenant_id == f.c.tenant_id,
                p.c.run_id == f.c.run_id,
                p.c.charge_reference == f.c.charge_reference,
            ),
        )
        .where(p.c.tenant_id == tenant_id, p.c.run_id == run_id, p.c.reference == heal.reference)
    ).all()
    charge = load_charge(conn, tenant_id, heal.resource_id)
    created = False
    for balance_transaction, fee_minor in txns:
        if fee_minor <= 0:
            continue
        posted = accounting.post_gateway_fee(
            conn,
            tenant_id,
            balance_transaction,
            charge.id,
            charge.gateway,
            fee_minor,
            heal.currency,
            now_ms,
        )
        created |= posted.created
    return created


def _learn_money_out(conn: Connection, tenant_id: str, heal: LearnMoneyOut, now_ms: int) -> bool:
    charge = load_charge(conn, tenant_id, heal.resource_id, lock=True)
    if charge.gateway_reference not in (None, heal.payment_reference):
        return False  # the charge is paid by another payment: not this charge's money
    fact: Fact
    commands: dict[str, str] = {}
    if heal.kind is ReversalKind.REFUND:
        # Checked again under the charge's lock: the run's read may predate a refund command.
        if heal.reference not in local.known_refund_ids(
            conn, tenant_id, charge.id
        ) and local.has_unreferenced_refund_in_flight(conn, tenant_id, charge.id):
            return False
        fact = RefundObserved(heal.reference, heal.amount_minor, RefundStatus.SUCCEEDED)
        if heal.command_ref is not None:
            commands[heal.reference] = heal.command_ref
    else:
        fact = DisputeOpened(heal.reference, heal.amount_minor)
    changes = local.learn_facts(
        conn, tenant_id, charge.gateway, charge, heal.payment_reference, [fact], commands, now_ms
    )
    return bool(changes)
