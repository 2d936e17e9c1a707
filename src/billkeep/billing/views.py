"""JSON shapes of billing resources (responses, stored command bodies and replays)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.periods import Period, period_at, period_bounds
from billkeep.domain.pricing import Plan

__all__ = [
    "billing_run_view",
    "current_period",
    "invoice_view",
    "line_view",
    "metric_view",
    "plan_view",
    "subscription_status",
    "subscription_view",
]


def metric_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "metric",
        "code": row.code,
        "name": row.name,
        "aggregation": row.aggregation,
        "property": row.property,
        "created_at": ms_to_rfc3339(row.created_at_ms),
    }


def plan_view(row: Any) -> dict[str, Any]:
    definition = json.loads(row.definition)
    return {
        "id": row.id,
        "object": "plan",
        "code": row.code,
        "name": row.name,
        "currency": row.currency,
        "interval": row.interval,
        "interval_count": row.interval_count,
        "trial_days": row.trial_days,
        "prices": definition["prices"],
        "created_at": ms_to_rfc3339(row.created_at_ms),
    }


def subscription_status(row: Any, now_ms: int) -> str:
    """trialing | active | past_due | canceled: payment standing is stored, the rest is time."""
    if row.ended_at_ms is not None and now_ms >= row.ended_at_ms:
        return "canceled"
    if row.status == "past_due":
        return "past_due"
    if now_ms < row.anchor_ms and row.anchor_ms > row.start_at_ms:
        return "trialing"
    return "active"


def current_period(row: Any, plan: Plan, now_ms: int) -> tuple[int, int]:
    """The period containing now: the trial before the anchor, else the billing period (capped by
    the end of the subscription); before a future start, the first period."""
    if now_ms < row.anchor_ms:
        if row.anchor_ms > row.start_at_ms and now_ms >= row.start_at_ms:
            return row.start_at_ms, row.anchor_ms
        return period_bounds(row.anchor_ms, plan.interval, plan.interval_count, 0)
    found: Period | None = period_at(row.anchor_ms, plan.interval, plan.interval_count, now_ms)
    assert found is not None, "at or after the anchor there is a period"
    start_ms, end_ms = found.start_ms, found.end_ms
    if row.ended_at_ms is not None:
        end_ms = min(end_ms, max(row.ended_at_ms, start_ms + 1))
    return start_ms, end_ms


def subscription_view(row: Any, plan: Plan, now_ms: int) -> dict[str, Any]:
    start_ms, end_ms = current_period(row, plan, now_ms)
    return {
        "id": row.id,
        "object": "subscription",
        "customer_id": row.customer_id,
        "plan_id": row.plan_id,
        "status": subscription_status(row, now_ms),
        "start_at": ms_to_rfc3339(row.start_at_ms),
        "trial_end": ms_to_rfc3339(row.anchor_ms) if row.anchor_ms > row.start_at_ms else None,
        "current_period_start": ms_to_rfc3339(start_ms),
        "current_period_end": ms_to_rfc3339(end_ms),
        "cancel_at_period_end": bool(row.cancel_at_period_end),
        "canceled_at": ms_to_rfc3339(row.canceled_at_ms),
        "ended_at": ms_to_rfc3339(row.ended_at_ms),
        "created_at": ms_to_rfc3339(row.created_at_ms),
    }


def line_view(row: Any) -> dict[str, Any]:
    return {
        "description": row.description,
        "quantity": row.quantity,
        "unit_amount": row.unit_amount_minor,
        "amount": row.amount_minor,
        "kind": row.kind,
        "metric": row.metric,
        "period_start": ms_to_rfc3339(row.period_start_ms),
        "period_end": ms_to_rfc3339(row.period_end_ms),
    }


def invoice_view(row: Any, lines: Sequence[Any], attempts: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "invoice",
        "subscription_id": row.subscription_id,
        "customer_id": row.customer_id,
        "period_start": ms_to_rfc3339(row.period_start_ms),
        "period_end": ms_to_rfc3339(row.period_end_ms),
        "currency": row.currency,
        "lines": [line_view(line) for line in lines],
        "total": row.total_minor,
        "amount_paid": row.amount_paid_minor,
        "status": row.status,
        "charge_id": row.charge_id,
        "attempts": [
            {
                "number": a.attempt_number,
                "charge_id": a.charge_id,
                "status": a.status,
                "failure_code": a.failure_code,
                "at": ms_to_rfc3339(a.created_at_ms),
            }
            for a in attempts
        ],
        "next_attempt_at": ms_to_rfc3339(row.next_attempt_at_ms) if row.status == "open" else None,
        "created_at": ms_to_rfc3339(row.created_at_ms),
        "paid_at": ms_to_rfc3339(row.paid_at_ms),
    }


def billing_run_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "billing_run",
        "as_of": ms_to_rfc3339(row.as_of_ms),
        "status": row.status,
        "invoices_created": row.invoices_created,
        "invoices_existing": row.invoices_existing,
        "charges_attempted": row.charges_attempted,
        "charges_succeeded": row.charges_succeeded,
        "charges_failed": row.charges_failed,
        "charges_pending": row.charges_pending,
        "created_at": ms_to_rfc3339(row.created_at_ms),
        "completed_at": ms_to_rfc3339(row.completed_at_ms),
    }
