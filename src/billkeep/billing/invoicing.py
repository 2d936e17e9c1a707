"""Invoices for ended periods: deterministic lines, usage claimed once, the sale posted once.

One transaction invoices a batch of due subscriptions, locked `FOR UPDATE SKIP LOCKED` on
PostgreSQL so overlapping runs on many workers split the work instead of colliding (SQLite's
BEGIN IMMEDIATE serialises them). Inside it, for each due period of a subscription, oldest first:
1. insert the invoice; the unique (tenant_id, subscription_id, period_start_ms) means a period is
   invoiced once whatever else runs (I6);
2. claim the usage: ONE conditional UPDATE sets `invoice_id` on every not-yet-claimed event of
   the subscription (its id, or its customer for customer-level events) for the plan's metrics,
   timestamped from the billing anchor up to the period end. `invoice_id IS NULL` in the WHERE
   means an event is claimed by one invoice only (I9). Claimed events from before the period
   start arrived after their own period was invoiced: they become adjustment lines here;
3. compute the lines (domain/pricing.py) and the total, then post `invoice:{id}:issued`.
The subscription's `next_period_index` advances in the same transaction.

Documented choices: usage before the billing anchor (during a trial or before the start) and after
the end of a canceled subscription is never billed; a late event can only add to what was billed
(if a volume price makes the recomputed period cheaper, the adjustment is 0, not a credit).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.accounting import IssuedInvoice, post_invoices_issued
from billkeep.billing.catalogue import load_metrics, load_plan
from billkeep.billing.config import BillingConfig
from billkeep.billing.subscriptions import billable_period, load_subscription
from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.errors import NotFound
from billkeep.domain.ids import new_id
from billkeep.domain.metrics import Aggregator, MetricDefinition
from billkeep.domain.money import MAX_AMOUNT_MINOR
from billkeep.domain.periods import period_bounds, period_index_at
from billkeep.domain.pricing import (
    BillingOverflow,
    FlatPrice,
    Plan,
    lines_total_minor,
    price_lines,
    price_metric,
)
from billkeep.storage.database import Database, insert_ignoring_conflicts
from billkeep.storage.tables.billing import invoice_lines, invoices, subscriptions, usage_events

__all__ = [
    "ComputedLine",
    "InvoicingTally",
    "UsageRow",
    "billed_usage",
    "compute_lines",
    "invoice_due_batch",
    "late_periods",
    "mark_billing_error",
    "metered_metrics",
    "upcoming_invoice",
]


@dataclass(frozen=True, slots=True)
class ComputedLine:
    kind: str  # "price" | "adjustment"
    description: str
    metric: str | None
    quantity: int
    unit_amount_minor: int
    amount_minor: int
    period_start_ms: int
    period_end_ms: int


@dataclass(frozen=True, slots=True)
class UsageRow:
    metric: str
    timestamp_ms: int
    properties: str  # JSON object


@dataclass
class InvoicingTally:
    subscriptions: int = 0
    created: int = 0
    existing: int = 0
    failed: int = 0
    invoice_ids: list[str] = field(default_factory=list)

    def add(self, other: InvoicingTally) -> None:
        self.subscriptions += other.subscriptions
        self.created += other.created
        self.existing += other.existing
        self.failed += other.failed
        self.invoice_ids.extend(other.invoice_ids)


_Issued = IssuedInvoice


# --- line computation (pure) ---------------------------------------------------------------------


def metered_metrics(plan: Plan) -> set[str]:
    return {m for m in (price_metric(p) for p in plan.prices) if m is not None}


def _quantities(
    definitions: Mapping[str, MetricDefinition], events: Iterable[UsageRow]
) -> dict[str, Aggregator]:
    aggregates = {code: Aggregator(definition) for code, definition in definitions.items()}
    for event in events:
        aggregator = aggregates.get(event.metric)
        if aggregator is not None:
            # Ingestion refused events their metric cannot aggregate, so nothing is dropped here.
            aggregator.add(json.loads(event.properties))
    return aggregates


def _day(value_ms: int) -> str:
    text = ms_to_rfc3339(value_ms)
    assert text is not None
    return text[:10]


def _period_lines(
    plan: Plan,
    definitions: Mapping[str, MetricDefinition],
    events: Sequence[UsageRow],
    start_ms: int,
    end_ms: int,
    complete: bool,
) -> list[ComputedLine]:
    aggregates = _quantities(definitions, events)
    lines: list[ComputedLine] = []
    for price in plan.prices:
        metric = price_metric(price)
        if metric is None:
            if not complete:
                continue  # flat fees are for complete periods (no proration)
            quantity = 1
        else:
            quantity = aggregates[metric].result()
        for line in price_lines(price, quantity):
            lines.append(
                ComputedLine(
                    "price",
                    line.description,
                    metric,
                    line.quantity,
                    line.unit_amount_minor,
                    line.amount_minor,
                    start_ms,
                    end_ms,
                )
            )
    return lines


def _adjustment_lines(
    plan: Plan,
    definitions: Mapping[str, MetricDefinition],
    late: Mapping[tuple[int, int], Sequence[UsageRow]],
    base: Mapping[tuple[int, int], Sequence[UsageRow]],
) -> list[ComputedLine]:
    """For each earlier period with late usage: what the period costs with it minus what it cost
    without it, per metered price (never negative)."""
    lines: list[ComputedLine] = []
    for (start_ms, end_ms), late_events in sorted(late.items()):
        before = _quantities(definitions, base.get((start_ms, end_ms), ()))
        after = _quantities(definitions, [*base.get((start_ms, end_ms), ()), *late_events])
        late_metrics = {e.metric for e in late_events}
        for price in plan.prices:
            metric = price_metric(price)
            if metric is None or metric not in late_metrics or isinstance(price, FlatPrice):
                continue
            q_before, q_after = before[metric].result(), after[metric].result()
            delta_minor = max(
                0,
                lines_total_minor(price_lines(price, q_after))
                - lines_total_minor(price_lines(price, q_before)),
            )
            label = price.description or metric
            lines.append(
                ComputedLine(
                    "adjustment",
                    f"Late usage: {label} for {_day(start_ms)}..{_day(end_ms)} "
                    f"(+{q_after - q_before} units)",
                    metric,
                    1,
                    delta_minor,
                    delta_minor,
                    start_ms,
                    end_ms,
                )
            )
    return lines


def compute_lines(
    plan: Plan,
    definitions: Mapping[str, MetricDefinition],
    anchor_ms: int,
    period: tuple[int, int, bool],
    claimed: Sequence[UsageRow],
    base_of_period: Mapping[tuple[int, int], Sequence[UsageRow]],
) -> list[ComputedLine]:
    """Lines of the invoice for `period` given the usage it claimed (in-period and late events)
    and, for each earlier period with late events, the usage already billed in it."""
    start_ms, end_ms, complete = period
    current = [e for e in claimed if e.timestamp_ms >= start_ms]
    late: dict[tuple[int, int], list[UsageRow]] = defaultdict(list)
    for event in claimed:
        if event.timestamp_ms < start_ms:
            late[_period_of(plan, anchor_ms, event.timestamp_ms)].append(event)
    lines = _period_lines(plan, definitions, current, start_ms, end_ms, complete)
    lines.extend(_adjustment_lines(plan, definitions, late, base_of_period))
    total_minor = sum(line.amount_minor for line in lines)
    if total_minor > MAX_AMOUNT_MINOR:
        raise BillingOverflow(f"invoice total {total_minor} exceeds {MAX_AMOUNT_MINOR}")
    return lines


def _period_of(plan: Plan, anchor_ms: int, at_ms: int) -> tuple[int, int]:
    index = period_index_at(anchor_ms, plan.interval, plan.interval_count, at_ms)
    assert index is not None, "claimed usage is never before the anchor"
    return period_bounds(anchor_ms, plan.interval, plan.interval_count, index)


# --- storage -----------------------------------------------------------------------------------


def _subject(sub: Any) -> sa.ColumnElement[bool]:
    """Events of the subscription: by its id, or customer-level events of its customer."""
    return sa.or_(
        usage_events.c.subscription_id == sub.id,
        sa.and_(
            usage_events.c.subscription_id.is_(None),
            usage_events.c.customer_id == sub.customer_id,
        ),
    )


def _usage(rows: Iterable[Any]) -> list[UsageRow]:
    return [UsageRow(r.metric, r.timestamp_ms, r.properties) for r in rows]


def _claim_usage(
    conn: Connection, sub: Any, metrics: set[str], end_ms: int, invoice_id: str
) -> list[UsageRow]:
    if not metrics:
        return []
    claim = (
        usage_events.update()
        .where(
            usage_events.c.tenant_id == sub.tenant_id,
            _subject(sub),
            usage_events.c.metric.in_(sorted(metrics)),
            usage_events.c.timestamp_ms >= sub.anchor_ms,
            usage_events.c.timestamp_ms < end_ms,
            usage_events.c.invoice_id.is_(None),
        )
        .values(invoice_id=invoice_id)
        .returning(usage_events.c.metric, usage_events.c.timestamp_ms, usage_events.c.properties)
    )
    return _usage(conn.execute(claim))


def billed_usage(
    conn: Connection,
    sub: Any,
    metrics: set[str],
    periods: Iterable[tuple[int, int]],
    exclude_invoice_id: str | None,
) -> dict[tuple[int, int], list[UsageRow]]:
    """Usage already billed (claimed by an earlier invoice) in each given period."""
    found: dict[tuple[int, int], list[UsageRow]] = {}
    for start_ms, end_ms in periods:
        query = sa.select(
            usage_events.c.metric, usage_events.c.timestamp_ms, usage_events.c.properties
        ).where(
            usage_events.c.tenant_id == sub.tenant_id,
            _subject(sub),
            usage_events.c.metric.in_(sorted(metrics)),
            usage_events.c.timestamp_ms >= start_ms,
            usage_events.c.timestamp_ms < end_ms,
            usage_events.c.invoice_id.is_not(None),
        )
        if exclude_invoice_id is not None:
            query = query.where(usage_events.c.invoice_id != exclude_invoice_id)
        found[(start_ms, end_ms)] = _usage(conn.execute(query))
    return found


def late_periods(
    plan: Plan, anchor_ms: int, claimed: Sequence[UsageRow], start_ms: int
) -> set[tuple[int, int]]:
    return {
        _period_of(plan, anchor_ms, e.timestamp_ms) for e in claimed if e.timestamp_ms < start_ms
    }


def _create_invoice(
    conn: Connection,
    sub: Any,
    plan: Plan,
    definitions: Mapping[str, MetricDefinition],
    index: int,
    period: tuple[int, int, bool],
    now_ms: int,
    run_id: str | None,
) -> _Issued | bool | None:
    """Invoice one period. Returns the issued invoice to post, None for a zero invoice (settled
    at once, nothing to post), False when the period already had an invoice."""
    start_ms, end_ms, _complete = period
    invoice_id = new_id("inv", now_ms)
    # RETURNING, not rowcount: psycopg reports rowcount -1 for this statement, which read as
    # "inserted" let a run whose read of due subscriptions was stale issue a phantom invoice
    # (ledger entry, lines, usage claimed) for a period that already had one.
    inserted = conn.execute(
        insert_ignoring_conflicts(conn.dialect.name, invoices)
        .values(
            tenant_id=sub.tenant_id,
            id=invoice_id,
            subscription_id=sub.id,
            customer_id=sub.customer_id,
            period_index=index,
            period_start_ms=start_ms,
            period_end_ms=end_ms,
            currency=plan.currency,
            total_minor=0,
            amount_paid_minor=0,
            status="open",
            attempt_count=0,
            next_attempt_at_ms=None,
            charge_id=None,
            billing_run_id=run_id,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            paid_at_ms=None,
        )
        .returning(invoices.c.id)
    ).first()
    if inserted is None:
        return False  # the unique (subscription, period_start) says this period is invoiced
    metered = metered_metrics(plan)
    claimed = _claim_usage(conn, sub, metered, end_ms, invoice_id)
    late = late_periods(plan, sub.anchor_ms, claimed, start_ms)
    base = billed_usage(conn, sub, metered, late, invoice_id) if late else {}
    lines = compute_lines(plan, definitions, sub.anchor_ms, period, claimed, base)
    if lines:
        conn.execute(
            invoice_lines.insert(),
            [
                {
                    "tenant_id": sub.tenant_id,
                    "invoice_id": invoice_id,
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
            ],
        )
    total_minor = sum(line.amount_minor for line in lines)
    paid = total_minor == 0  # nothing to collect: settled at once
    conn.execute(
        invoices.update()
        .where(invoices.c.tenant_id == sub.tenant_id, invoices.c.id == invoice_id)
        .values(
            total_minor=total_minor,
            status="paid" if paid else "open",
            next_attempt_at_ms=None if paid else now_ms,
            paid_at_ms=now_ms if paid else None,
        )
    )
    if paid:
        return None
    return _Issued(sub.tenant_id, invoice_id, sub.customer_id, total_minor, plan.currency)


def _invoice_subscription(
    conn: Connection,
    sub: Any,
    as_of_ms: int,
    now_ms: int,
    config: BillingConfig,
    run_id: str | None,
) -> tuple[list[_Issued], int, int]:
    """Invoice every due period of one (locked) subscription; returns (to post, created, existing)."""
    plan = load_plan(conn, sub.tenant_id, sub.plan_id).plan
    definitions = load_metrics(conn, sub.tenant_id, metered_metrics(plan))
    issued: list[_Issued] = []
    created = existing = 0
    index = sub.next_period_index
    for _ in range(config.max_periods_per_subscription):
        period = billable_period(sub.anchor_ms, plan, index, sub.ended_at_ms)
        if period is None or period[1] > as_of_ms:
            break
        outcome = _create_invoice(conn, sub, plan, definitions, index, period, now_ms, run_id)
        if outcome is False:
            existing += 1
        else:
            created += 1
            if isinstance(outcome, _Issued):
                issued.append(outcome)
        index += 1
    following = billable_period(sub.anchor_ms, plan, index, sub.ended_at_ms)
    conn.execute(
        subscriptions.update()
        .where(subscriptions.c.tenant_id == sub.tenant_id, subscriptions.c.id == sub.id)
        .values(
            next_period_index=index,
            next_period_end_ms=None if following is None else following[1],
            updated_at_ms=now_ms,
        )
    )
    return issued, created, existing


def _due_subscriptions(
    conn: Connection, as_of_ms: int, tenant_id: str | None, limit: int
) -> list[Any]:
    query = sa.select(subscriptions).where(
        subscriptions.c.next_period_end_ms <= as_of_ms, subscriptions.c.billing_error.is_(None)
    )
    if tenant_id is not None:
        query = query.where(subscriptions.c.tenant_id == tenant_id)
    query = query.order_by(subscriptions.c.next_period_end_ms).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query).all())


def mark_billing_error(conn: Connection, sub: Any, error: str, now_ms: int) -> None:
    conn.execute(
        subscriptions.update()
        .where(subscriptions.c.tenant_id == sub.tenant_id, subscriptions.c.id == sub.id)
        .values(billing_error=error[:2000], updated_at_ms=now_ms)
    )


def _invoice_one(
    conn: Connection,
    sub: Any,
    as_of_ms: int,
    now_ms: int,
    config: BillingConfig,
    run_id: str | None,
    tally: InvoicingTally,
    to_post: list[_Issued],
) -> None:
    """Every due period of one subscription, statement by statement (SQLite; catch-up of several
    periods on PostgreSQL), in a savepoint so an overflow leaves the others untouched."""
    try:
        with conn.begin_nested():
            issued, created, existing = _invoice_subscription(
                conn, sub, as_of_ms, now_ms, config, run_id
            )
    except BillingOverflow as exc:
        tally.failed += 1
        mark_billing_error(conn, sub, str(exc), now_ms)
        return
    tally.created += created
    tally.existing += existing
    to_post.extend(issued)


def invoice_due_batch(
    db: Database,
    as_of_ms: int,
    now_ms: int,
    config: BillingConfig,
    *,
    tenant_id: str | None = None,
    run_id: str | None = None,
) -> InvoicingTally:
    """Lock and invoice one batch of due subscriptions (one transaction). `subscriptions == 0`
    in the tally means nothing due was left unlocked."""

    def work(conn: Connection) -> InvoicingTally:
        tally = InvoicingTally()
        to_post: list[_Issued] = []
        due = _due_subscriptions(conn, as_of_ms, tenant_id, config.invoice_batch_size)
        tally.subscriptions = len(due)
        one_by_one = due
        if conn.dialect.name == "postgresql":
            # Imported here: invoicing_pg builds on this module's helpers.
            from billkeep.billing.invoicing_pg import invoice_set_based

            one_by_one = invoice_set_based(conn, due, as_of_ms, now_ms, run_id, tally, to_post)
        for sub in one_by_one:
            _invoice_one(conn, sub, as_of_ms, now_ms, config, run_id, tally, to_post)
        by_tenant: dict[str, list[_Issued]] = defaultdict(list)
        for item in to_post:
            by_tenant[item.tenant_id].append(item)
        # Tenants in order, accounts in id order inside: one global lock order (no deadlocks).
        for tenant in sorted(by_tenant):
            post_invoices_issued(conn, tenant, by_tenant[tenant], now_ms)
        tally.invoice_ids.extend(item.invoice_id for item in to_post)
        return tally

    return db.run_write(work)


# --- preview -------------------------------------------------------------------------------------


def upcoming_invoice(
    conn: Connection, tenant_id: str, subscription_id: str, now_ms: int
) -> dict[str, Any]:
    """A dry run of the next invoice of a subscription: the period not yet invoiced, priced with
    the usage received so far. Nothing is claimed or written."""
    sub = load_subscription(conn, tenant_id, subscription_id)
    plan = load_plan(conn, tenant_id, sub.plan_id).plan
    period = billable_period(sub.anchor_ms, plan, sub.next_period_index, sub.ended_at_ms)
    if period is None:
        raise NotFound(f"subscription {subscription_id} has no upcoming invoice")
    metered = metered_metrics(plan)
    definitions = load_metrics(conn, tenant_id, metered)
    pending: list[UsageRow] = []
    if metered:
        pending = _usage(
            conn.execute(
                sa.select(
                    usage_events.c.metric, usage_events.c.timestamp_ms, usage_events.c.properties
                ).where(
                    usage_events.c.tenant_id == tenant_id,
                    _subject(sub),
                    usage_events.c.metric.in_(sorted(metered)),
                    usage_events.c.timestamp_ms >= sub.anchor_ms,
                    usage_events.c.timestamp_ms < period[1],
                    usage_events.c.invoice_id.is_(None),
                )
            )
        )
    late = late_periods(plan, sub.anchor_ms, pending, period[0])
    base = billed_usage(conn, sub, metered, late, None) if late else {}
    lines = compute_lines(plan, definitions, sub.anchor_ms, period, pending, base)
    return {
        "object": "upcoming_invoice",
        "subscription_id": sub.id,
        "customer_id": sub.customer_id,
        "period_start": ms_to_rfc3339(period[0]),
        "period_end": ms_to_rfc3339(period[1]),
        "currency": plan.currency,
        "lines": [
            {
                "description": line.description,
                "quantity": line.quantity,
                "unit_amount": line.unit_amount_minor,
                "amount": line.amount_minor,
                "kind": line.kind,
                "metric": line.metric,
            }
            for line in lines
        ],
        "total": sum(line.amount_minor for line in lines),
        "as_of": ms_to_rfc3339(now_ms),
    }
