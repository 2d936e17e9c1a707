"""The two sorted streams the merge consumes: the staged gateway records and the ledger's charges,
both ordered by match key with byte-wise collation (see matching's docstring), streamed from the
database with a server-side cursor on PostgreSQL so memory stays bounded."""

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
from billkeep.storage.tables.core import charges, journal_entries
from billkeep.storage.tables.reconciliation import staged_gateway_fees, staged_gateway_payments

__all__ = ["STREAM_BATCH_ROWS", "gateway_records", "ledger_records"]

STREAM_BATCH_ROWS = 2_000  # rows fetched per round trip from a streaming cursor


def _byte_order(conn: Connection, column: Any) -> Any:
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def _stream(conn: Connection, query: Any) -> Iterator[Any]:
    result = conn.execution_options(stream_results=True, yield_per=STREAM_BATCH_ROWS).execute(query)
    yield from result


def gateway_records(conn: Connection, tenant_id: str, run_id: str) -> Iterator[GatewayRecord]:
    p, f = staged_gateway_payments, staged_gateway_fees
    fee = (
        sa.select(sa.func.sum(f.c.fee_minor))
        .where(
            f.c.tenant_id == p.c.tenant_id,
            f.c.run_id == p.c.run_id,
            f.c.charge_reference == p.c.charge_reference,
        )
        .scalar_subquery()
    )
    query = (
        sa.select(p, fee.label("fee_minor"))
        .where(p.c.tenant_id == tenant_id, p.c.run_id == run_id)
        .order_by(_byte_order(conn, p.c.match_key), _byte_order(conn, p.c.reference))
    )
    for row in _stream(conn, query):
        yield GatewayRecord(
            reference=row.reference,
            command_ref=row.command_ref,
            amount_minor=row.amount_minor,
            currency=row.currency,
            status=GatewayStatus(row.status),
            created_ms=row.created_ms,
            fee_minor=None if row.fee_minor is None else int(row.fee_minor),  # SUM: Decimal on PG
            amount_refunded_minor=row.amount_refunded_minor,
        )


def ledger_records(
    conn: Connection, tenant_id: str, from_ms: int, to_ms: int
) -> Iterator[LedgerRecord]:
    c, j = charges, journal_entries
    fee_posted = (
        sa.select(j.c.id)
        .where(
            j.c.tenant_id == c.c.tenant_id,
            j.c.resource_id == c.c.id,
            j.c.entry_key.like("fee:%"),
        )
        .exists()
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
            fee_posted.label("fee_posted"),
        )
        .where(c.c.tenant_id == tenant_id, c.c.created_at_ms >= from_ms, c.c.created_at_ms < to_ms)
        .order_by(_byte_order(conn, c.c.command_id), c.c.id)
    )
    for row in _stream(conn, query):
        yield LedgerRecord(
            resource_id=row.id,
            command_ref=row.command_id,
            gateway_reference=row.gateway_reference,
            amount_minor=row.amount_minor,
            currency=row.currency,
            status=LedgerStatus(row.status),
            created_ms=row.created_at_ms,
            fee_posted=bool(row.fee_posted),
        )
