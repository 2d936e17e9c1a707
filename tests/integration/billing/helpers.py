"""Shared helpers of the billing integration tests (plain functions, so subprocesses use them too)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.ids import new_id
from billkeep.domain.periods import period_bounds
from billkeep.engine.service import Billkeep
from billkeep.storage.tables.billing import invoice_lines, invoices, subscriptions
from billkeep.storage.tables.core import accounts, customers

__all__ = [
    "bulk_subscriptions",
    "create_customer",
    "create_metric",
    "create_plan",
    "create_subscription",
    "ingest",
    "invoice_rows",
    "iso",
    "ledger_totals",
    "lines_of",
]

_counter = [0]


def _key(prefix: str) -> str:
    _counter[0] += 1
    return f"{prefix}-{_counter[0]}"


def iso(value_ms: int) -> str:
    text = ms_to_rfc3339(value_ms)
    assert text is not None
    return text


def create_customer(bk: Billkeep, tenant: str, payment_method: str = "pm_card_visa") -> str:
    result = bk.execute(
        tenant, "customer.create", {"payment_method": payment_method}, idempotency_key=_key("cus")
    )
    assert result.status == 201, result.body_text
    return str(result.body()["id"])


def create_metric(
    bk: Billkeep, tenant: str, code: str, aggregation: str = "sum", prop: str | None = "units"
) -> str:
    body: dict[str, Any] = {"code": code, "name": code, "aggregation": aggregation}
    if prop is not None and aggregation != "count":
        body["property"] = prop
    result = bk.execute(tenant, "metric.create", body, idempotency_key=_key("met"))
    assert result.status == 201, result.body_text
    return str(result.body()["id"])


def create_plan(
    bk: Billkeep,
    tenant: str,
    code: str,
    prices: list[dict[str, Any]],
    *,
    currency: str = "usd",
    trial_days: int = 0,
) -> str:
    body = {
        "code": code,
        "name": code,
        "currency": currency,
        "interval": "month",
        "trial_days": trial_days,
        "prices": prices,
    }
    result = bk.execute(tenant, "plan.create", body, idempotency_key=_key("plan"))
    assert result.status == 201, result.body_text
    return str(result.body()["id"])


def create_subscription(
    bk: Billkeep, tenant: str, customer_id: str, plan_id: str, start_ms: int | None = None
) -> str:
    body: dict[str, Any] = {"customer_id": customer_id, "plan_id": plan_id}
    if start_ms is not None:
        body["start_at"] = iso(start_ms)
    result = bk.execute(tenant, "subscription.create", body, idempotency_key=_key("sub"))
    assert result.status == 201, result.body_text
    return str(result.body()["id"])


def ingest(bk: Billkeep, tenant: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    from billkeep.billing.usage_ingest import ingest_usage_events

    return ingest_usage_events(bk.db, tenant, {"events": events}, bk.clock.now_ms()).as_dict()


def invoice_rows(bk: Billkeep, tenant: str) -> list[Any]:
    with bk.db.read() as conn:
        return list(
            conn.execute(
                sa.select(invoices)
                .where(invoices.c.tenant_id == tenant)
                .order_by(invoices.c.subscription_id, invoices.c.period_start_ms)
            ).all()
        )


def lines_of(bk: Billkeep, tenant: str, invoice_id: str) -> list[Any]:
    with bk.db.read() as conn:
        return list(
            conn.execute(
                sa.select(invoice_lines)
                .where(
                    invoice_lines.c.tenant_id == tenant, invoice_lines.c.invoice_id == invoice_id
                )
                .order_by(invoice_lines.c.seq)
            ).all()
        )


def ledger_totals(bk: Billkeep, tenant: str) -> dict[str, int]:
    """Posted balances by account code (debits - credits)."""
    with bk.db.read() as conn:
        rows = conn.execute(
            sa.select(accounts.c.code, accounts.c.debits_posted, accounts.c.credits_posted).where(
                accounts.c.tenant_id == tenant
            )
        ).all()
    return {r.code: int(r.debits_posted) - int(r.credits_posted) for r in rows}


def bulk_subscriptions(
    bk: Billkeep,
    tenant: str,
    plan_id: str,
    starts_ms: list[int],
    declined_every: int = 0,
) -> list[str]:
    """Customers and monthly subscriptions (no trial) written directly, for large tests: the
    setup is not what those tests exercise. Every `declined_every`-th customer's card declines."""
    now_ms = bk.clock.now_ms()
    customer_rows, subscription_rows = [], []
    for n, start_ms in enumerate(starts_ms):
        customer_id, sub_id = new_id("cus", now_ms), new_id("sub", now_ms)
        declined = declined_every and n % declined_every == 0
        customer_rows.append(
            {
                "tenant_id": tenant,
                "id": customer_id,
                "email": None,
                "name": None,
                "external_id": None,
                "payment_method": "pm_card_chargeDeclined" if declined else "pm_card_visa",
                "metadata": "{}",
                "command_id": None,
                "created_at_ms": now_ms,
            }
        )
        subscription_rows.append(
            {
                "tenant_id": tenant,
                "id": sub_id,
                "customer_id": customer_id,
                "plan_id": plan_id,
                "status": "active",
                "start_at_ms": start_ms,
                "anchor_ms": start_ms,
                "cancel_at_period_end": False,
                "canceled_at_ms": None,
                "ended_at_ms": None,
                "next_period_index": 0,
                "next_period_end_ms": period_bounds(start_ms, "month", 1, 0)[1],
                "billing_error": None,
                "command_id": new_id("cmd", now_ms),
                "created_at_ms": now_ms,
                "updated_at_ms": now_ms,
            }
        )
    with bk.db.write() as conn:
        for chunk in range(0, len(customer_rows), 5000):
            conn.execute(customers.insert(), customer_rows[chunk : chunk + 5000])
            conn.execute(subscriptions.insert(), subscription_rows[chunk : chunk + 5000])
    return [str(row["id"]) for row in subscription_rows]
