"""Read models: every GET of the API, tenant-scoped, with cursor pagination (ids sort by time)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.errors import NotFound, ValidationFailed
from billkeep.engine import ledger
from billkeep.engine.views import charge_view, customer_view, refund_view
from billkeep.storage.database import Database
from billkeep.storage.tables.core import (
    accounts,
    charges,
    command_transitions,
    commands,
    customers,
    journal_entries,
    postings,
    refunds,
)

__all__ = [
    "DEFAULT_PAGE_LIMIT",
    "MAX_PAGE_LIMIT",
    "Page",
    "Queries",
    "command_view",
    "fetch_one",
    "fetch_page",
]

DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100
MAX_HISTORY_ROWS = 1000


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": self.data,
            "has_more": self.has_more,
            "next_cursor": self.next_cursor,
        }


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValidationFailed.single("limit", f"must be 1..{MAX_PAGE_LIMIT}")
    return limit


def command_view(row: Any, history: Sequence[Any]) -> dict[str, Any]:
    response = None
    if row.response_status is not None:
        response = {"status": row.response_status, "body": json.loads(row.response_body)}
    return {
        "id": row.id,
        "object": "command",
        "operation": row.operation,
        "idempotency_key": row.idempotency_key,
        "business_key": row.business_key,
        "state": row.state,
        "recovery_point": row.recovery_point,
        "attempts": row.attempts,
        "request": json.loads(row.request),
        "response": response,
        "resource_id": row.resource_id,
        "key_expires_at": ms_to_rfc3339(row.key_expires_at_ms),
        "history": [
            {
                "seq": h.seq,
                "from_state": h.from_state,
                "state": h.to_state,
                "recovery_point": h.recovery_point,
                "actor": h.actor,
                "at": ms_to_rfc3339(h.at_ms),
                "detail": h.detail,
            }
            for h in history
        ],
        "created_at": ms_to_rfc3339(row.created_at_ms),
        "completed_at": ms_to_rfc3339(row.completed_at_ms),
    }


def account_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "account",
        "code": row.code,
        "type": row.account_type,
        "currency": row.currency,
        "customer_id": row.customer_id,
        "balance": {
            "debits_posted": row.debits_posted,
            "credits_posted": row.credits_posted,
            "debits_pending": row.debits_pending,
            "credits_pending": row.credits_pending,
        },
    }


def entry_view(view: ledger.EntryView) -> dict[str, Any]:
    return {
        "id": view.id,
        "object": "journal_entry",
        "entry_key": view.entry_key,
        "state": view.state,
        "description": view.description,
        "resource_id": view.resource_id,
        "postings": [
            {"account_id": a, "direction": d, "amount": m, "currency": c}
            for a, d, m, c in view.postings
        ],
        "reverses": view.reverses,
        "created_at": ms_to_rfc3339(view.created_at_ms),
    }


def fetch_one(db: Database, table: sa.Table, tenant_id: str, object_id: str, what: str) -> Any:
    """One row of a tenant's table by id, or NotFound (another tenant's id is simply not found)."""
    row = db.run_read(
        lambda c: c.execute(
            sa.select(table).where(table.c.tenant_id == tenant_id, table.c.id == object_id)
        ).first()
    )
    if row is None:
        raise NotFound(f"no {what} {object_id}")
    return row


def fetch_page(
    db: Database,
    table: sa.Table,
    tenant_id: str,
    filters: Sequence[Any],
    limit: int,
    cursor: str | None,
    render: Callable[[Connection, Any], dict[str, Any]],
) -> Page:
    """A page of a tenant's rows, newest first; the cursor is the last id returned (ids sort by
    time). `render` gets the read's connection, for views that need child rows."""
    check_limit(limit)
    query = sa.select(table).where(table.c.tenant_id == tenant_id, *filters)
    if cursor:
        query = query.where(table.c.id < cursor)
    query = query.order_by(table.c.id.desc()).limit(limit + 1)

    def work(conn: Connection) -> Page:
        rows = conn.execute(query).all()
        has_more = len(rows) > limit
        rows = rows[:limit]
        return Page([render(conn, r) for r in rows], has_more, rows[-1].id if has_more else None)

    return db.run_read(work)


class Queries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _one(self, table: sa.Table, tenant_id: str, object_id: str, what: str) -> Any:
        return fetch_one(self.db, table, tenant_id, object_id, what)

    def _page(
        self,
        table: sa.Table,
        tenant_id: str,
        filters: Sequence[Any],
        limit: int,
        cursor: str | None,
        render: Callable[[Any], dict[str, Any]],
    ) -> Page:
        return fetch_page(
            self.db, table, tenant_id, filters, limit, cursor, lambda _c, r: render(r)
        )

    # customers, charges, refunds
    def customer(self, tenant_id: str, customer_id: str) -> dict[str, Any]:
        return customer_view(self._one(customers, tenant_id, customer_id, "customer"))

    def customers(
        self, tenant_id: str, limit: int = DEFAULT_PAGE_LIMIT, cursor: str | None = None
    ) -> Page:
        return self._page(customers, tenant_id, [], limit, cursor, customer_view)

    def charge(self, tenant_id: str, charge_id: str) -> dict[str, Any]:
        return charge_view(self._one(charges, tenant_id, charge_id, "charge"))

    def charges(
        self,
        tenant_id: str,
        customer_id: str | None = None,
        status: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
    ) -> Page:
        filters = []
        if customer_id is not None:
            filters.append(charges.c.customer_id == customer_id)
        if status is not None:
            filters.append(charges.c.status == status)
        return self._page(charges, tenant_id, filters, limit, cursor, charge_view)

    def refund(self, tenant_id: str, refund_id: str) -> dict[str, Any]:
        return refund_view(self._one(refunds, tenant_id, refund_id, "refund"))

    # the command ledger
    def command(self, tenant_id: str, command_id: str) -> dict[str, Any]:
        row = self._one(commands, tenant_id, command_id, "command")
        history = self.db.run_read(
            lambda c: c.execute(
                sa.select(command_transitions)
                .where(
                    command_transitions.c.tenant_id == tenant_id,
                    command_transitions.c.command_id == command_id,
                )
                .order_by(command_transitions.c.seq)
                .limit(MAX_HISTORY_ROWS)
            ).all()
        )
        return command_view(row, history)

    def commands(
        self,
        tenant_id: str,
        state: str | None = None,
        operation: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
    ) -> Page:
        filters = []
        if state is not None:
            filters.append(commands.c.state == state)
        if operation is not None:
            filters.append(commands.c.operation == operation)
        return self._page(
            commands, tenant_id, filters, limit, cursor, lambda r: command_view(r, [])
        )

    # the money ledger
    def account(self, tenant_id: str, account_id: str) -> dict[str, Any]:
        return account_view(self._one(accounts, tenant_id, account_id, "account"))

    def accounts(
        self,
        tenant_id: str,
        customer_id: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
    ) -> Page:
        filters = [] if customer_id is None else [accounts.c.customer_id == customer_id]
        return self._page(accounts, tenant_id, filters, limit, cursor, account_view)

    def journal_entries(
        self,
        tenant_id: str,
        account_id: str | None = None,
        resource_id: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
    ) -> Page:
        check_limit(limit)
        query = sa.select(journal_entries.c.id).where(journal_entries.c.tenant_id == tenant_id)
        if resource_id is not None:
            query = query.where(journal_entries.c.resource_id == resource_id)
        if account_id is not None:
            query = query.where(
                journal_entries.c.id.in_(
                    sa.select(postings.c.entry_id).where(
                        postings.c.tenant_id == tenant_id, postings.c.account_id == account_id
                    )
                )
            )
        if cursor:
            query = query.where(journal_entries.c.id < cursor)
        query = query.order_by(journal_entries.c.id.desc()).limit(limit + 1)

        def work(conn: Connection) -> list[dict[str, Any]]:
            ids = conn.execute(query).scalars().all()
            return [entry_view(ledger.load_entry(conn, tenant_id, str(i))) for i in ids]

        views = self.db.run_read(work)
        has_more = len(views) > limit
        views = views[:limit]
        return Page(views, has_more, views[-1]["id"] if has_more else None)

    def trial_balance(self, tenant_id: str) -> dict[str, Any]:
        lines = self.db.run_read(lambda c: ledger.trial_balance(c, tenant_id))
        for line in lines:
            assert line.debits_minor == line.credits_minor, (
                f"ledger out of balance in {line.currency}"
            )
        return {
            "object": "trial_balance",
            "currencies": [
                {"currency": ln.currency, "debits": ln.debits_minor, "credits": ln.credits_minor}
                for ln in lines
            ],
        }
