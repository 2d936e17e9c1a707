"""Read models of the inbox: `GET /v1/webhook_events[?gateway_id=&outcome=]`, `GET
/v1/webhook_events/{id}` and `billkeep events list|show`."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.errors import NotFound, ValidationFailed
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT, Page, check_limit
from billkeep.storage.database import Database
from billkeep.storage.tables.reconciliation import webhook_events
from billkeep.webhooks.inbox import EventOutcome

__all__ = ["event_view", "get_event", "list_events"]


def event_view(row: Any, *, with_payload: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "object": "webhook_event",
        "gateway_id": row.gateway_id,
        "event_id": row.event_id,
        "type": row.event_type,
        "reference": row.reference,
        "outcome": row.outcome,
        "reason": row.reason,
        "attempts": row.attempts,
        "received_at": ms_to_rfc3339(row.received_at_ms),
        "processed_at": ms_to_rfc3339(row.processed_at_ms),
        "next_attempt_at": ms_to_rfc3339(row.next_attempt_at_ms),
    }
    if with_payload:
        view["payload"] = json.loads(row.payload)
    return view


def get_event(db: Database, tenant_id: str, event_row_id: str) -> dict[str, Any]:
    row = db.run_read(
        lambda conn: conn.execute(
            sa.select(webhook_events).where(
                webhook_events.c.tenant_id == tenant_id, webhook_events.c.id == event_row_id
            )
        ).first()
    )
    if row is None:
        raise NotFound(f"no webhook event {event_row_id}")
    return event_view(row, with_payload=True)


def list_events(
    db: Database,
    tenant_id: str,
    *,
    gateway_id: str | None = None,
    outcome: str | None = None,
    limit: int = DEFAULT_PAGE_LIMIT,
    cursor: str | None = None,
) -> Page:
    """Newest first, paginated by id (ids sort by time)."""
    check_limit(limit)
    query = sa.select(webhook_events).where(webhook_events.c.tenant_id == tenant_id)
    if gateway_id is not None:
        query = query.where(webhook_events.c.gateway_id == gateway_id)
    if outcome is not None:
        if outcome not in {o.value for o in EventOutcome}:
            allowed = ", ".join(o.value for o in EventOutcome)
            raise ValidationFailed.single("outcome", f"must be one of {allowed}")
        query = query.where(webhook_events.c.outcome == outcome)
    if cursor:
        query = query.where(webhook_events.c.id < cursor)
    query = query.order_by(webhook_events.c.id.desc()).limit(limit + 1)
    rows = db.run_read(lambda conn: conn.execute(query).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page([event_view(r) for r in rows], has_more, rows[-1].id if has_more else None)
