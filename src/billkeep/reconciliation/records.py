"""The sorted streams the merges consume: the staged gateway records and the ledger's charges,
and the staged refunds and disputes and the ledger's refunds, each ordered by match key with
byte-wise collation (see matching's and money_out's docstrings), streamed from the database with
a server-side cursor on PostgreSQL so memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.reconciliation.matching import (
    GatewayRecord,
    GatewayStatus,
    LedgerRecord,
    LedgerStatus,
)
from billkeep.reconciliation.money_out_records import (
    GatewayReversal,
    LedgerRefund,
    ReversalKind,
    ReversalStatus,
)
from billkeep.storage.tables.core import charges, journal_entries, postings, refunds
from billkeep.storage.tables.reconciliation import (
    staged_gateway_fees,
    staged_gateway_payments,
    staged_gateway_reversals,
)

__all__ = [
    "SORT_WORK_MEM_MB",
    "STREAM_BATCH_ROWS",
    "gateway_records",
    "gateway_reversal_records",
    "ledger_records",
    "ledger_refund_records",
]

STREAM_BATCH_ROWS = 2_000  # rows fetched per round trip from a streaming cursor
# Per sort of a streamed side (1M staged rows sort in memory instead of spilling to disk).
SORT_WORK_MEM_MB = 256


_GATEWAY_STATUS = {status.value: status for status in GatewayStatus}
_LEDGER_STATUS = {status.value: status for status in LedgerStatus}


def _byte_order(conn: Connection, column: Any) -> Any:
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def _stream(conn: Connection, query: Any) -> Iterator[Any]:
    if conn.dialect.name == "postgresql":
        # A server-side cursor makes the planner optimize for the first 10% of rows (nested
        # loops, index probes per row); the merge reads every row, so plan for all of them
        # (hash joins, one sort), and give that sort room in memory.
        conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{SORT_WORK_MEM_MB}MB'")
    result = conn.execution_options(stream_results=True, yield_per=STREAM_BATCH_ROWS).execute(query)
    yield from result


def gateway_records(conn: Connection, tenant_id: str, run_id: str) -> Iterator[GatewayRecord]:
    p, f = staged_gateway_payments, staged_gateway_fees
    # The run's fees summed per gateway charge once (one aggregate, joined), not a subquery per
    # payment: the same sums, NULL where a payment has no charge or no fee.
    fees = (
        sa.select(f.c.charge_reference, sa.func.sum(f.c.fee_minor).label("fee_minor"))
        .where(f.c.tenant_id == tenant_id, f.c.run_id == run_id)
        .group_by(f.c.charge_reference)
        .subquery("fees")
    )
    query = (
        sa.select(
            p.c.reference,
            p.c.command_ref,
            p.c.amount_minor,
            p.c.currency,
            p.c.status,
            p.c.created_ms,
            fees.c.fee_minor,
            p.c.amount_refunded_minor,
        )
        .select_from(p.outerjoin(fees, fees.c.charge_reference == p.c.charge_reference))
        .where(p.c.tenant_id == tenant_id, p.c.run_id == run_id)
        .order_by(_byte_order(conn, p.c.match_key), _byte_order(conn, p.c.reference))
    )
    status_of = _GATEWAY_STATUS.__getitem__
    # Positional rows: a million records make attribute access and Enum() calls add up.
    for reference, command, amount, currency, status, created, fee, refunded in _stream(
        conn, query
    ):
        yield GatewayRecord(
            reference,
            command,
            amount,
            currency,
            status_of(status),
            created,
            None if fee is None else int(fee),  # SUM: Decimal on PostgreSQL
            refunded,
        )


def ledger_records(
    conn: Connection, tenant_id: str, from_ms: int, to_ms: int
) -> Iterator[LedgerRecord]:
    c, j = charges, journal_entries
    # The charges with a fee entry, found once (one aggregate, joined) rather than one EXISTS
    # probe per charge: the select-list EXISTS is a per-row subplan on PostgreSQL.
    with_fee = (
        sa.select(j.c.resource_id)
        .where(
            j.c.tenant_id == tenant_id,
            j.c.resource_id.is_not(None),
            j.c.entry_key.like("fee:%"),
        )
        .group_by(j.c.resource_id)
        .subquery("with_fee")
    )
    query = (
        sa.select(
            c.c.id,
            c.c.command_id,
            c.c.gateway_reference,
            c.c.amount_minor,
            c.c.currency,
            c.c.status,
            c.c.created_at_ms,
            with_fee.c.resource_id.is_not(None).label("fee_posted"),
        )
        .select_from(c.outerjoin(with_fee, with_fee.c.resource_id == c.c.id))
        .where(c.c.tenant_id == tenant_id, c.c.created_at_ms >= from_ms, c.c.created_at_ms < to_ms)
        .order_by(_byte_order(conn, c.c.command_id), c.c.id)
    )
    status_of = _LEDGER_STATUS.__getitem__
    for resource_id, command, reference, amount, currency, status, created, fee_posted in _stream(
        conn, query
    ):
        yield LedgerRecord(
            resource_id,
            command,
            reference,
            amount,
            currency,
            status_of(status),
            created,
            bool(fee_posted),
        )


def gateway_reversal_records(
    conn: Connection, tenant_id: str, run_id: str
) -> Iterator[GatewayReversal]:
    """The staged refunds and disputes, each with what the ledger holds for it: the local charge
    of its payment, the amount of its `kind:reference` entry (any age: a fact learned later than
    the window is still learned), and whether a billkeep refund of that charge is in flight."""
    # Index lookups per staged row (charges by reference, entries by key, postings and refunds
    # by their primary / charge index): a window holds far fewer refunds and disputes than
    # payments, so the per-row subqueries the payments' merge avoids are cheap here.
    s, c, j, p, r = staged_gateway_reversals, charges, journal_entries, postings, refunds
    posted = (
        sa.select(sa.func.sum(p.c.amount_minor))
        .where(p.c.tenant_id == j.c.tenant_id, p.c.entry_id == j.c.id, p.c.direction == "debit")
        .scalar_subquery()
    )
    in_flight = (
        sa.select(r.c.id)
        .where(
            r.c.tenant_id == c.c.tenant_id,
            r.c.charge_id == c.c.id,
            r.c.status == "pending",
            r.c.gateway_reference.is_(None),
        )
        .exists()
    )
    query = (
        sa.select(
            s.c.kind,
            s.c.reference,
            s.c.payment_reference,
            s.c.command_ref,
            s.c.amount_minor,
            s.c.currency,
            s.c.status,
            s.c.created_ms,
            c.c.id,
            c.c.currency,
            sa.case((j.c.id.is_not(None), posted), else_=None),
            sa.case((c.c.id.is_not(None), in_flight), else_=False),
        )
        .select_from(
            s.outerjoin(
                c,
                sa.and_(
                    c.c.tenant_id == s.c.tenant_id, c.c.gateway_reference == s.c.payment_reference
                ),
            ).outerjoin(j, sa.and_(j.c.tenant_id == s.c.tenant_id, j.c.entry_key == s.c.match_key))
        )
        .where(s.c.tenant_id == tenant_id, s.c.run_id == run_id)
        .order_by(_byte_order(conn, s.c.match_key))
    )
    for row in _stream(conn, query):
        kind, reference, payment, command, amount, currency, status, created = row[:8]
        charge_id, charge_currency, posted_minor, flight = row[8:]
        yield GatewayReversal(
            ReversalKind(kind),
            reference,
            payment,
            command,
            amount,
            currency,
            ReversalStatus(status),
            created,
            charge_id,
            charge_currency,
            None if posted_minor is None else int(posted_minor),  # SUM: Decimal on PostgreSQL
            bool(flight),
        )


def ledger_refund_records(
    conn: Connection, tenant_id: str, from_ms: int, to_ms: int
) -> Iterator[LedgerRefund]:
    """The refunds billkeep made and recorded as succeeded at the gateway, created in the window,
    by gateway reference (the match key `refund:{re}` sorts as the reference does)."""
    r = refunds
    query = (
        sa.select(
            r.c.charge_id,
            r.c.id,
            r.c.gateway_reference,
            r.c.amount_minor,
            r.c.currency,
            r.c.created_at_ms,
        )
        .where(
            r.c.tenant_id == tenant_id,
            r.c.status == "succeeded",
            r.c.gateway_reference.is_not(None),
            r.c.created_at_ms >= from_ms,
            r.c.created_at_ms < to_ms,
        )
        .order_by(_byte_order(conn, r.c.gateway_reference))
    )
    for charge_id, refund_id, reference, amount, currency, created in _stream(conn, query):
        yield LedgerRefund(charge_id, refund_id, reference, amount, currency, created)
