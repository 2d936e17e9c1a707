"""JSON shapes of reconciliation runs and breaks (API, CLI exports) and their queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.errors import NotFound
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT, Page, check_limit
from billkeep.storage.database import Database
from billkeep.storage.tables.reconciliation import reconciliation_breaks, reconciliation_runs

__all__ = ["all_breaks", "break_view", "get_run", "list_breaks", "run_view"]


def run_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "reconciliation",
        "status": row.status,
        "gateway_id": row.gateway_id,
        "from": ms_to_rfc3339(row.from_ms),
        "to": ms_to_rfc3339(row.to_ms),
        "grace_period_ms": row.grace_period_ms,
        "summary": json.loads(row.summary),
        "created_at": ms_to_rfc3339(row.created_at_ms),
        "completed_at": ms_to_rfc3339(row.completed_at_ms),
    }


def break_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "reconciliation_break",
        "reconciliation_id": row.run_id,
        "type": row.type,
        "match_key": row.match_key,
        "gateway_reference": row.gateway_reference,
        "resource_id": row.resource_id,
        "expected": json.loads(row.expected),
        "actual": json.loads(row.actual),
        "healed": bool(row.healed),
        "resolution": row.resolution,
    }


def get_run(db: Database, tenant_id: str, run_id: str) -> dict[str, Any]:
    row = db.run_read(
        lambda conn: conn.execute(
            sa.select(reconciliation_runs).where(
                reconciliation_runs.c.tenant_id == tenant_id, reconciliation_runs.c.id == run_id
            )
        ).first()
    )
    if row is None:
        raise NotFound(f"no reconciliation {run_id}")
    return run_view(row)


def list_breaks(
    db: Database,
    tenant_id: str,
    run_id: str,
    *,
    break_type: str | None = None,
    limit: int = DEFAULT_PAGE_LIMIT,
    cursor: str | None = None,
) -> Page:
    """A run's breaks in the order found (ids sort by time), paginated."""
    get_run(db, tenant_id, run_id)  # 404 for another tenant's or an unknown run
    check_limit(limit)
    b = reconciliation_breaks
    query = sa.select(b).where(b.c.tenant_id == tenant_id, b.c.run_id == run_id)
    if break_type is not None:
        query = query.where(b.c.type == break_type)
    if cursor:
        query = query.where(b.c.id > cursor)
    rows = db.run_read(lambda conn: conn.execute(query.order_by(b.c.id).limit(limit + 1)).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page([break_view(r) for r in rows], has_more, rows[-1].id if has_more else None)


def all_breaks(
    db: Database, tenant_id: str, run_id: str, page_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every break of a run, page by page (exports)."""
    cursor: str | None = None
    while True:
        page = list_breaks(db, tenant_id, run_id, limit=min(page_size, 100), cursor=cursor)
        yield from page.data
        if not page.has_more:
            return
        cursor = page.next_cursor
