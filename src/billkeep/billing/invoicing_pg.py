"""Set-based invoicing of a batch of locked subscriptions on PostgreSQL.

The same effects as invoicing each subscription one by one (invoicing.py), in a constant number of
statements per batch for the common case -- a subscription with exactly one due period:
1. ONE `INSERT ... SELECT FROM unnest(...) ON CONFLICT (tenant_id, subscription_id,
   period_start_ms) DO NOTHING RETURNING id`: the ids returned are the periods this batch
   invoices; the others already had their invoice (I6);
2. TWO conditional `UPDATE usage_events ... FROM unnest(...) WHERE invoice_id IS NULL RETURNING`
   (subscription-level events, then customer-level ones): each event is claimed by one invoice
   only (I9), and the claimed rows come back to be aggregated in Python, grouped by invoice;
3. lines computed per invoice (domain/pricing.py), inserted in one executemany; totals, statuses
   and the subscriptions' next period written with one executemany each.
Late usage (claimed events before the period start) needs what the earlier period billed: one
query per subscription that has any (rare). A subscription with several due periods (catching up)
is left to the one-by-one path, as is one whose next period is not due after all.
An amount overflow undoes that subscription's invoice and claims and records its billing_error,
as the savepoint of the one-by-one path does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from billkeep.billing.accounting import IssuedInvoice
from billkeep.billing.catalogue import load_metrics, load_plan
from billkeep.billing.invoicing import (
    ComputedLine,
    InvoicingTally,
    UsageRow,
    billed_usage,
    compute_lines,
    late_periods,
    mark_billing_error,
    metered_metrics,
)
from billkeep.billing.subscriptions import billable_period
from billkeep.domain.ids import new_id
from billkeep.domain.pricing import BillingOverflow, Plan
from billkeep.storage.tables.billing import invoice_lines, invoices, usage_events

__all__ = ["invoice_set_based"]

_INSERT_INVOICES = """
INSERT INTO invoices (tenant_id, id, subscription_id, customer_id, period_index, period_start_ms,
    period_end_ms, currency, total_minor, amount_paid_minor, status, attempt_count,
    next_attempt_at_ms, charge_id, billing_run_id, created_at_ms, updated_at_ms, paid_at_ms)
SELECT v.tenant_id, v.id, v.subscription_id, v.customer_id, v.period_index, v.period_start_ms,
    v.period_end_ms, v.currency, 0, 0, 'open', 0, NULL, NULL, %s::text, %s::bigint, %s::bigint,
    NULL
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::integer[], %b::bigint[],
    %b::bigint[], %b::text[])
    AS v(tenant_id, id, subscription_id, customer_id, period_index, period_start_ms,
         period_end_ms, currency)
ON CONFLICT (tenant_id, subscription_id, period_start_ms) DO NOTHING
RETURNING id
"""

_CLAIM = """
UPDATE usage_events AS u SET invoice_id = v.invoice_id
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[],
    %b::bigint[]) AS v(tenant_id, subscription_id, customer_id, metric, invoice_id, anchor_ms,
    end_ms)
WHERE u.tenant_id = v.tenant_id AND {subject} AND u.metric = v.metric
  AND u.timestamp_ms >= v.anchor_ms AND u.timestamp_ms < v.end_ms AND u.invoice_id IS NULL
RETURNING u.invoice_id, u.metric, u.timestamp_ms, u.properties
"""
_WRITE_TOTALS = """
UPDATE invoices AS i SET total_minor = v.total_minor,
    status = CASE WHEN v.total_minor = 0 THEN 'paid' ELSE 'open' END,
    next_attempt_at_ms = CASE WHEN v.total_minor = 0 THEN NULL ELSE %s::bigint END,
    paid_at_ms = CASE WHEN v.total_minor = 0 THEN %s::bigint ELSE NULL END
FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS v(tenant_id, id, total_minor)
WHERE i.tenant_id = v.tenant_id AND i.id = v.id
RETURNING i.id
"""
_ADVANCE = """
UPDATE subscriptions AS s SET next_period_index = v.next_index,
    next_period_end_ms = NULLIF(v.next_end_ms, -1), updated_at_ms = %s::bigint
FROM unnest(%b::text[], %b::text[], %b::integer[], %b::bigint[])
    AS v(tenant_id, id, next_index, next_end_ms)
WHERE s.tenant_id = v.tenant_id AND s.id = v.id
RETURNING s.id
"""
_BY_SUBSCRIPTION = "u.subscription_id = v.subscription_id"
_BY_CUSTOMER = "u.subscription_id IS NULL AND u.customer_id = v.customer_id"


@dataclass(frozen=True, slots=True)
class _Planned:
    sub: Any
    plan: Plan
    period: tuple[int, int, bool]
    following: tuple[int, int, bool] | None
    invoice_id: str


def _driver_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    # Never prepared: a generic plan made while the tables were small could scan a whole tenant.
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params, prepare=False)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _plan_batch(
    conn: Connection, due: Sequence[Any], as_of_ms: int, now_ms: int
) -> tuple[list[_Planned], list[Any]]:
    planned: list[_Planned] = []
    rest: list[Any] = []
    for sub in due:
        plan = load_plan(conn, sub.tenant_id, sub.plan_id).plan
        index = sub.next_period_index
        period = billable_period(sub.anchor_ms, plan, index, sub.ended_at_ms)
        following = billable_period(sub.anchor_ms, plan, index + 1, sub.ended_at_ms)
        if period is None or period[1] > as_of_ms or (following and following[1] <= as_of_ms):
            rest.append(sub)
            continue
        planned.append(_Planned(sub, plan, period, following, new_id("inv", now_ms)))
    return planned, rest


def _insert_invoices(
    conn: Connection, planned: Sequence[_Planned], now_ms: int, run_id: str | None
) -> set[str]:
    columns: list[list[Any]] = [[] for _ in range(8)]
    for p in sorted(planned, key=lambda p: (p.sub.tenant_id, p.sub.id)):
        values = (p.sub.tenant_id, p.invoice_id, p.sub.id, p.sub.customer_id,
                  p.sub.next_period_index, p.period[0], p.period[1], p.plan.currency)  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = _driver_rows(conn, _INSERT_INVOICES, [run_id, now_ms, now_ms, *columns])
    return {str(row[0]) for row in rows}


def _claim(conn: Connection, fresh: Sequence[_Planned]) -> dict[str, list[UsageRow]]:
    columns: list[list[Any]] = [[] for _ in range(7)]
    for p in fresh:
        for metric in sorted(metered_metrics(p.plan)):
            values = (p.sub.tenant_id, p.sub.id, p.sub.customer_id, metric, p.invoice_id,
                      p.sub.anchor_ms, p.period[1])  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
    claimed: dict[str, list[UsageRow]] = defaultdict(list)
    if not columns[0]:
        return claimed
    for subject in (_BY_SUBSCRIPTION, _BY_CUSTOMER):
        for invoice_id, metric, timestamp_ms, properties in _driver_rows(
            conn, _CLAIM.format(subject=subject), columns
        ):
            claimed[str(invoice_id)].append(UsageRow(metric, timestamp_ms, properties))
    return claimed


def _undo(conn: Connection, p: _Planned) -> None:
    """An overflowing invoice is not issued: its claims are released and the row removed."""
    tenant_id = p.sub.tenant_id
    conn.execute(
        usage_events.update()
        .where(usage_events.c.tenant_id == tenant_id, usage_events.c.invoice_id == p.invoice_id)
        .values(invoice_id=None)
    )
    conn.execute(
        invoices.delete().where(invoices.c.tenant_id == tenant_id, invoices.c.id == p.invoice_id)
    )


def _line_rows(p: _Planned, lines: Sequence[ComputedLine]) -> list[dict[str, Any]]:
    return [
        {
            "tenant_id": p.sub.tenant_id,
            "invoice_id": p.invoice_id,
            "seq": seq,
            "kind": line.kind,
            "description": line.description[:400],
            "metric": line.metric,
            "quantity": line.quantity,
            "unit_amount_minor": line.unit_amount_minor,
            "amount_minor": line.amount_minor,
            "period_start_ms": line.period_start_ms,
            "period_end_ms": line.period_end_ms,
        }
        for seq, line in enumerate(lines, start=1)
    ]


def _write_totals(conn: Connection, totals: Sequence[tuple[_Planned, int]], now_ms: int) -> None:
    if not totals:
        return
    # A zero invoice has nothing to collect: settled at once (paid, no attempt due).
    columns = [
        [p.sub.tenant_id for p, _ in totals],
        [p.invoice_id for p, _ in totals],
        [total for _, total in totals],
    ]
    _driver_rows(conn, _WRITE_TOTALS, [now_ms, now_ms, *columns])


def _advance(conn: Connection, advanced: Sequence[_Planned], now_ms: int) -> None:
    if not advanced:
        return
    # -1 stands for NULL (no period left): a bigint array of only NULLs has no element type.
    columns = [
        [p.sub.tenant_id for p in advanced],
        [p.sub.id for p in advanced],
        [p.sub.next_period_index + 1 for p in advanced],
        [-1 if p.following is None else p.following[1] for p in advanced],
    ]
    _driver_rows(conn, _ADVANCE, [now_ms, *columns])


def invoice_set_based(
    conn: Connection,
    due: Sequence[Any],
    as_of_ms: int,
    now_ms: int,
    run_id: str | None,
    tally: InvoicingTally,
    to_post: list[IssuedInvoice],
) -> list[Any]:
    """Invoice the locked subscriptions that have exactly one due period; returns the others,
    for the one-by-one path."""
    planned, rest = _plan_batch(conn, due, as_of_ms, now_ms)
    if not planned:
        return rest
    inserted = _insert_invoices(conn, planned, now_ms, run_id)
    fresh = [p for p in planned if p.invoice_id in inserted]
    tally.existing += len(planned) - len(fresh)
    claimed = _claim(conn, fresh)
    totals: list[tuple[_Planned, int]] = []
    line_rows: list[dict[str, Any]] = []
    failed: set[str] = set()
    for p in fresh:
        metered = metered_metrics(p.plan)
        definitions = load_metrics(conn, p.sub.tenant_id, metered)
        rows = claimed.get(p.invoice_id, [])
        late = late_periods(p.plan, p.sub.anchor_ms, rows, p.period[0])
        base = billed_usage(conn, p.sub, metered, late, p.invoice_id) if late else {}
        try:
            lines = compute_lines(p.plan, definitions, p.sub.anchor_ms, p.period, rows, base)
        except BillingOverflow as exc:
            _undo(conn, p)
            mark_billing_error(conn, p.sub, str(exc), now_ms)
            tally.failed += 1
            failed.add(p.invoice_id)
            continue
        total_minor = sum(line.amount_minor for line in lines)
        totals.append((p, total_minor))
        line_rows.extend(_line_rows(p, lines))
        if total_minor > 0:
            to_post.append(
                IssuedInvoice(
                    p.sub.tenant_id, p.invoice_id, p.sub.customer_id, total_minor, p.plan.currency
                )
            )
    tally.created += len(totals)
    if line_rows:
        conn.execute(invoice_lines.insert(), line_rows)
    _write_totals(conn, totals, now_ms)
    _advance(conn, [p for p in planned if p.invoice_id not in failed], now_ms)
    return rest
