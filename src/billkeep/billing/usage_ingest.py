"""`POST /v1/usage_events`: set-based ingestion, deduplicated by (tenant_id, event_id).

One transaction per batch, a constant number of round trips whatever the batch size:
1. validate every item (domain/usage.py), then check the subjects and metrics it names exist and
   that each event carries what its metric aggregates (one query per kind, not per event);
2. `INSERT ... ON CONFLICT DO NOTHING` all candidates, each row stamped with this batch's id;
3. one SELECT of the candidates' stored (fingerprint, batch_id): rows with our batch id are new;
   the others were stored before (or by a concurrent batch that won the unique key) and are
   duplicates when the fingerprint matches, `event_id_reused` rejections when it does not.

Candidates are inserted in event_id order so concurrent batches with overlapping ids take the
unique-index locks in one global order (no deadlock). Nothing is acknowledged before the commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.catalogue import load_metrics
from billkeep.domain.ids import new_id
from billkeep.domain.metrics import Rejection, extract_value
from billkeep.domain.usage import (
    RejectedEvent,
    UsageEvent,
    check_event_id_reuse,
    validate_usage_batch,
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


def _existing_ids(conn: Connection, column: Any, tenant_column: Any, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    assert len(ids) <= _MAX_IN_LIST
    rows = conn.execute(sa.select(column).where(tenant_column, column.in_(sorted(ids)))).scalars()
    return {str(value) for value in rows}


def _reference_rejections(
    conn: Connection, tenant_id: str, events: Sequence[tuple[int, UsageEvent]]
) -> dict[int, Rejection]:
    """Events naming a customer, subscription or metric that does not exist, or lacking what their
    metric aggregates (checked now, so an accepted event is always billable)."""
    customer_ids = {e.customer_id for _, e in events if e.customer_id is not None}
    subscription_ids = {e.subscription_id for _, e in events if e.subscription_id is not None}
    known_customers = _existing_ids(
        conn, customers.c.id, customers.c.tenant_id == tenant_id, customer_ids
    )
    known_subscriptions = _existing_ids(
        conn, subscriptions.c.id, subscriptions.c.tenant_id == tenant_id, subscription_ids
    )
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


def _insert(
    conn: Connection,
    tenant_id: str,
    events: Iterable[UsageEvent],
    batch_id: str,
    now_ms: int,
) -> None:
    rows = [
        {
            "tenant_id": tenant_id,
            "event_id": e.event_id,
            "customer_id": e.customer_id,
            "subscription_id": e.subscription_id,
            "metric": e.metric,
            "timestamp_ms": e.timestamp_ms,
            "properties": json.dumps(dict(e.properties), sort_keys=True, separators=(",", ":")),
            "fingerprint": e.fingerprint,
            "batch_id": batch_id,
            "received_at_ms": now_ms,
            "invoice_id": None,
        }
        for e in sorted(events, key=lambda e: e.event_id)
    ]
    if rows:
        conn.execute(insert_ignoring_conflicts(conn.dialect.name, usage_events), rows)


def _store(
    conn: Connection, tenant_id: str, candidates: Sequence[tuple[int, UsageEvent]], now_ms: int
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
    _insert(conn, tenant_id, (e for _, e in valid), batch_id, now_ms)
    stored = {
        row.event_id: (row.fingerprint, row.batch_id)
        for row in conn.execute(
            sa.select(
                usage_events.c.event_id, usage_events.c.fingerprint, usage_events.c.batch_id
            ).where(
                usage_events.c.tenant_id == tenant_id,
                usage_events.c.event_id.in_([e.event_id for _, e in valid]),
            )
        )
    }
    for index, event in valid:
        stored_fingerprint, stored_batch = stored[event.event_id]
        if stored_batch == batch_id:
            result.accepted += 1
            continue
        reuse = check_event_id_reuse(stored_fingerprint, event)
        if reuse is None:
            result.duplicates += 1
        else:
            result.rejected.append(RejectedEvent(index, event.event_id, reuse.code, reuse.detail))
    return result


def ingest_usage_events(db: Database, tenant_id: str, body: Any, now_ms: int) -> IngestResult:
    """Validate and store one batch (at most 1000 events). Raises ValidationFailed only for a
    malformed envelope; every bad event is reported in `rejected` instead."""
    batch = validate_usage_batch(body, now_ms)

    def work(conn: Connection) -> IngestResult:
        stored = _store(conn, tenant_id, batch.events, now_ms)
        stored.duplicates += len(batch.duplicate_indexes)
        stored.rejected.extend(batch.rejected)
        return stored

    result = db.run_write(work)
    total = result.accepted + result.duplicates + len(result.rejected)
    assert total == len(batch.events) + len(batch.duplicate_indexes) + len(batch.rejected)
    return result
