"""Read models of billing resources (tenant-scoped, cursor-paginated like engine/queries.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.catalogue import load_plan
from billkeep.billing.invoicing import upcoming_invoice
from billkeep.billing.views import (
    billing_run_view,
    invoice_view,
    metric_view,
    plan_view,
    subscription_view,
)
from billkeep.domain.clock import Clock
from billkeep.domain.errors import NotFound, ValidationFailed
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT, Page, fetch_one, fetch_page
from billkeep.storage.database import Database
from billkeep.storage.tables.billing import (
    billing_runs,
    invoice_attempts,
    invoice_lines,
    invoices,
    metrics,
    plans,
    subscriptions,
)

__all__ = ["INVOICE_STATUSES", "BillingQueries", "load_invoice_view"]

INVOICE_STATUSES = ("open", "paid", "uncollectible", "void")


def load_invoice_view(conn: Connection, tenant_id: str, invoice_id: str) -> dict[str, Any]:
    row = conn.execute(
        sa.select(invoices).where(invoices.c.tenant_id == tenant_id, invoices.c.id == invoice_id)
    ).first()
    if row is None:
        raise NotFound(f"no invoice {invoice_id}")
    return _invoice_with_children(conn, row)


def _invoice_with_children(conn: Connection, row: Any) -> dict[str, Any]:
    lines = conn.execute(
        sa.select(invoice_lines)
        .where(invoice_lines.c.tenant_id == row.tenant_id, invoice_lines.c.invoice_id == row.id)
        .order_by(invoice_lines.c.seq)
    ).all()
    attempts = conn.execute(
        sa.select(invoice_attempts)
        .where(
            invoice_attempts.c.tenant_id == row.tenant_id,
            invoice_attempts.c.invoice_id == row.id,
        )
        .order_by(invoice_attempts.c.attempt_number)
    ).all()
    return invoice_view(row, lines, attempts)


class BillingQueries:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def _one(self, table: sa.Table, tenant_id: str, object_id: str, what: str) -> Any:
        return fetch_one(self.db, table, tenant_id, object_id, what)

    def _page(
        self,
        table: sa.Table,
        tenant_id: str,
        filters: Sequence[Any],
        limit: int,
        cursor: str | None,
        render: Callable[[Connection, Any], dict[str, Any]],
    ) -> Page:
        return fetch_page(self.db, table, tenant_id, filters, limit, cursor, render)

    def metric(self, tenant_id: str, metric_id: str) -> dict[str, Any]:
        return metric_view(self._one(metrics, tenant_id, metric_id, "metric"))

    def metrics(
        self, tenant_id: str, limit: int = DEFAULT_PAGE_LIMIT, cursor: str | None = None
    ) -> Page:
        return self._page(metrics, tenant_id, [], limit, cursor, lambda _c, r: metric_view(r))

    def plan(self, tenant_id: str, plan_id: str) -> dict[str, Any]:
        return plan_view(self._one(plans, tenant_id, plan_id, "plan"))

    def plans(
        self, tenant_id: str, limit: int = DEFAULT_PAGE_LIMIT, cursor: str | None = None
    ) -> Page:
        return self._page(plans, tenant_id, [], limit, cursor, lambda _c, r: plan_view(r))

    def _subscription(self, conn: Connection, row: Any) -> dict[str, Any]:
        plan = load_plan(conn, row.tenant_id, row.plan_id).plan
        return subscription_view(row, plan, self.clock.now_ms())

    def subscription(self, tenant_id: str, subscription_id: str) -> dict[str, Any]:
        row = self._one(subscriptions, tenant_id, subscription_id, "subscription")
        return self.db.run_read(lambda conn: self._subscription(conn, row))

    def subscriptions(
        self,
        tenant_id: str,
        customer_id: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
    ) -> Page:
        filters = [] if customer_id is None else [subscriptions.c.customer_id == customer_id]
        return self._page(subscriptions, tenant_id, filters, limit, cursor, self._subscription)

    def upcoming_invoice(self, tenant_id: str, subscription_id: str) -> dict[str, Any]:
        now_ms = self.clock.now_ms()
        return self.db.run_read(
            lambda conn: upcoming_invoice(conn, tenant_id, subscription_id, now_ms)
        )

    def invoice(self, tenant_id: str, invoice_id: str) -> dict[str, Any]:
        return self.db.run_read(lambda conn: load_invoice_view(conn, tenant_id, invoice_id))

    def invoices(
        self,
        tenant_id: str,
        subscription_id: str | None = None,
        status: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
    ) -> Page:
        filters = []
        if subscription_id is not None:
            filters.append(invoices.c.subscription_id == subscription_id)
        if status is not None:
            if status not in INVOICE_STATUSES:
                raise ValidationFailed.single("status", f"must be one of {INVOICE_STATUSES}")
            filters.append(invoices.c.status == status)
        return self._page(invoices, tenant_id, filters, limit, cursor, _invoice_with_children)

    def billing_run(self, tenant_id: str, run_id: str) -> dict[str, Any]:
        return billing_run_view(self._one(billing_runs, tenant_id, run_id, "billing run"))
