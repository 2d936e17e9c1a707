"""`POST /v1/usage_events`: set-based ingestion, deduplicated by (tenant_id, event_id).

One transaction per batch, a constant number of round trips whatever the batch size:
1. validate every item (billing/usage_fast.py: the domain rules of domain/usage.py on a cheap
   path), then check the subjects and metrics it names exist and that each event carries what its
   metric aggregates (one query per kind, not per event);
2. insert all candidates, ignoring conflicts, each row stamped with this batch's id. On
   PostgreSQL: ONE `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING RETURNING
   event_id` (the ids returned are exactly the rows this batch stored); on SQLite an executemany;
3. the candidates not stored by this batch were stored before (or by a concurrent batch that won
   the unique key): one SELECT of their fingerprints tells a duplicate (same fingerprint) from an
   `event_id_reused` rejection (another content).

Candidates are inserted in event_id order so concurrent batches with overlapping ids take the
unique-index locks in one global order (no deadlock). Nothing is acknowledged before the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.catalogue import load_metrics
from billkeep.billing.usage_fast import fast_validate_batch
from billkeep.domain.ids import new_id
from billkeep.domain.metrics import Rejection, extract_value
from billkeep.domain.usage import (
    RejectedEvent,
    UsageEvent,
    check_event_id_reuse,
)
from billkeep.storage.database import Database, insert_ignoring_conflicts
from billkeep.storage.tables.billing import subscriptions, usage_events
from billkeep.storage.tables.core import customers

__all__ = [
    "REJECT_UNKNOWN_CUSTOMER",
    "REJECT_UNKNOWN_METRIC",
    "REJECT_UNKNOWN_SUBSCRIPTION",
    "IngestResult",
    "ingest_usage_events",
]

REJECT_UNKNOWN_CUSTOMER = "unknown_customer"
REJECT_UNKNOWN_SUBSCRIPTION = "unknown_subscription"
REJECT_UNKNOWN_METRIC = "unknown_metric"
# Parameters per IN (...) list; a batch is at most 1000 events, so one list suffices.
_MAX_IN_LIST = 1000
_USAGE_COLUMNS = (
    "tenant_id", "event_id", "customer_id", "subscription_id", "metric", "timestamp_ms",
    "properties", "fingerprint", "batch_id", "received_at_ms", "invoice_id",
)  # fmt: skip
_PG_TYPES = ("text", "text", "text", "text", "text", "bigint", "text", "text", "text", "bigint",
             "text")  # fmt: skip
# Every column from one array each: one statement, 11 parameters, whatever the batch size.
_PG_INSERT = (
    f"INSERT INTO usage_events ({', '.join(_USAGE_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in _PG_TYPES)}) "
    "ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id"
)


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "usage_ingestion",
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [
                {"index": r.index, "event_id": r.event_id, "code": r.code, "detail": r.detail}
                for r in sorted(self.rejected, key=lambda r: r.index)
            ],
        }


def _pg_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run on the driver, never as a prepared statement: a generic plan made while the table was
    small (psycopg prepares a statement after a few runs) can scan a whole tenant instead of
    using the primary key, and then every batch gets slower as the table grows."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params, prepare=False)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _existing_ids(conn: Connection, table: sa.Table, tenant_id: str, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    assert len(ids) <= _MAX_IN_LIST
    if conn.dialect.name == "postgresql":
        # One array parameter joined on the primary key (tenant_id, id).
        sql = (
            f"SELECT t.id FROM unnest(%b::text[]) AS v(id) "
            f"JOIN {table.name} AS t ON t.tenant_id = %s AND t.id = v.id"
        )
        return {str(row[0]) for row in _pg_rows(conn, sql, [sorted(ids), tenant_id])}
    rows = conn.execute(
        sa.select(table.c.id).where(table.c.tenant_id == tenant_id, table.c.id.in_(sorted(ids)))
    ).scalars()
    return {str(value) for value in rows}


def _reference_rejections(
    conn: Connection, tenant_id: str, events: Sequence[tuple[int, UsageEvent]]
) -> dict[int, Rejection]:
    """Events naming a customer, subscription or metric that does not exist, or lacking what their
    metric aggregates (checked now, so an accepted event is always billable)."""
    customer_ids = {e.customer_id for _, e in events if e.customer_id is not None}
    subscription_ids = {e.subscription_id for _, e in events if e.subscription_id is not None}
    known_customers = _existing_ids(conn, customers, tenant_id, customer_ids)
    known_subscriptions = _existing_ids(conn, subscriptions, tenant_id, subscription_ids)
    definitions = load_metrics(conn, tenant_id, {e.metric for _, e in events})
    rejections: dict[int, Rejection] = {}
    for index, event in events:
        if event.customer_id is not None and event.customer_id not in known_customers:
            rejections[index] = Rejection(
                REJECT_UNKNOWN_CUSTOMER, f"no customer {event.customer_id}"
            )
        elif event.subscription_id is not None and event.subscription_id not in known_subscriptions:
            rejections[index] = Rejection(
                REJECT_UNKNOWN_SUBSCRIPTION, f"no subscription {event.subscription_id}"
            )
        elif event.metric not in definitions:
            rejections[index] = Rejection(REJECT_UNKNOWN_METRIC, f"no metric {event.metric}")
        else:
            value = extract_value(definitions[event.metric], event.properties)
            if isinstance(value, Rejection):
                rejections[index] = value
    return rejections


def _rows(
    tenant_id: str, events: Iterable[UsageEvent], texts: dict[str, str], batch_id: str, now_ms: int
) -> list[tuple[Any, ...]]:
    # Sorted by event_id so concurrent batches with overlapping ids take the unique-index locks
    # in one global order (no deadlock).
    return [
        (tenant_id, e.event_id, e.customer_id, e.subscription_id, e.metric, e.timestamp_ms,
         texts[e.event_id], e.fingerprint, batch_id, now_ms, None)
        for e in sorted(events, key=lambda e: e.event_id)
    ]  # fmt: skip


def _insert(conn: Connection, rows: list[tuple[Any, ...]], batch_id: str) -> set[str]:
    """Insert ignoring existing ids; returns the event ids this batch stored."""
    if conn.dialect.name == "postgresql":
        columns = [list(column) for column in zip(*rows, strict=True)]
        return {str(row[0]) for row in _pg_rows(conn, _PG_INSERT, columns)}
    conn.execute(
        insert_ignoring_conflicts(conn.dialect.name, usage_events),
        [dict(zip(_USAGE_COLUMNS, row, strict=True)) for row in rows],
    )
    ids = [row[1] for row in rows]
    stored = conn.execute(
        sa.select(usage_events.c.event_id).where(
            usage_events.c.tenant_id == rows[0][0],
            usage_events.c.event_id.in_(ids),
            usage_events.c.batch_id == batch_id,
        )
    ).scalars()
    return {str(event_id) for event_id in stored}


_PG_FINGERPRINTS = (
    "SELECT u.event_id, u.fingerprint FROM unnest(%b::text[]) AS v(event_id) "
    "JOIN usage_events AS u ON u.tenant_id = %s AND u.event_id = v.event_id"
)


def _stored_fingerprints(conn: Connection, tenant_id: str, event_ids: list[str]) -> dict[str, str]:
    if not event_ids:
        return {}
    if conn.dialect.name == "postgresql":
        rows = _pg_rows(conn, _PG_FINGERPRINTS, [event_ids, tenant_id])
        return {str(event_id): str(digest) for event_id, digest in rows}
    found = conn.execute(
        sa.select(usage_events.c.event_id, usage_events.c.fingerprint).where(
            usage_events.c.tenant_id == tenant_id, usage_events.c.event_id.in_(event_ids)
        )
    )
    return {str(row.event_id): str(row.fingerprint) for row in found}


def _store(
    conn: Connection,
    tenant_id: str,
    candidates: Sequence[tuple[int, UsageEvent]],
    texts: dict[str, str],
    now_ms: int,
) -> IngestResult:
    result = IngestResult()
    refused = _reference_rejections(conn, tenant_id, candidates)
    by_index = dict(candidates)
    for index, rejection in refused.items():
        event_id = by_index[index].event_id
        result.rejected.append(RejectedEvent(index, event_id, rejection.code, rejection.detail))
    valid = [(i, e) for i, e in candidates if i not in refused]
    if not valid:
        return result
    batch_id = new_id("use", now_ms)
    inserted = _insert(
        conn, _rows(tenant_id, (e for _, e in valid), texts, batch_id, now_ms), batch_id
    )
    existing = _stored_fingerprints(
        conn, tenant_id, sorted(e.event_id for _, e in valid if e.event_id not in inserted)
    )
    for index, event in valid:
        if event.event_id in inserted:
            result.accepted += 1
            continue
        reuse = check_event_id_reuse(existing[event.event_id], event)
        if reuse is None:
            result.duplicates += 1
        else:
            result.rejected.append(RejectedEvent(index, event.event_id, reuse.code, reuse.detail))
    return result


def ingest_usage_events(db: Database, tenant_id: str, body: Any, now_ms: int) -> IngestResult:
    """Validate and store one batch (at most 1000 events). Raises ValidationFailed only for a
    malformed envelope; every bad event is reported in `rejected` instead."""
    fast = fast_validate_batch(body, now_ms)
    batch = fast.batch

    def work(conn: Connection) -> IngestResult:
        stored = _store(conn, tenant_id, batch.events, fast.properties_text, now_ms)
        stored.duplicates += len(batch.duplicate_indexes)
        stored.rejected.extend(batch.rejected)
        return stored

    result = db.run_write(work)
    total = result.accepted + result.duplicates + len(result.rejected)
    assert total == len(batch.events) + len(batch.duplicate_indexes) + len(batch.rejected)
    return result
