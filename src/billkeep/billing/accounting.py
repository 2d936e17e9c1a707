"""The ledger entry an issued invoice posts: the customer owes the total (receivable up, revenue up).

The payment of the invoice is posted by the charge (`payment:{reference}:succeeded`), which skips
its own sale entry because the charge carries the invoice id: the sale is posted exactly once,
here, under the entry key `invoice:{id}:issued`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.ids import new_id
from billkeep.domain.ledger import (
    AccountType,
    Direction,
    EntryState,
    PostingSpec,
    assert_balanced,
    content_hash,
)
from billkeep.engine.accounting import REVENUE_SALES, receivable_code
from billkeep.engine.ledger import PostedEntry, post_entry
from billkeep.storage.database import insert_ignoring_conflicts
from billkeep.storage.tables.core import accounts, journal_entries, postings

__all__ = [
    "IssuedInvoice",
    "invoice_entry_key",
    "invoice_issued_postings",
    "post_invoice_issued",
    "post_invoices_issued",
]


def invoice_entry_key(invoice_id: str) -> str:
    return f"invoice:{invoice_id}:issued"


def invoice_issued_postings(customer_id: str, total_minor: int, currency: str) -> list[PostingSpec]:
    assert total_minor > 0, "a zero invoice posts nothing"
    return [
        PostingSpec(
            receivable_code(customer_id),
            AccountType.ASSET,
            Direction.DEBIT,
            total_minor,
            currency,
            customer_id,
        ),
        PostingSpec(REVENUE_SALES, AccountType.REVENUE, Direction.CREDIT, total_minor, currency),
    ]


def post_invoice_issued(
    conn: Connection,
    tenant_id: str,
    invoice_id: str,
    customer_id: str,
    total_minor: int,
    currency: str,
    now_ms: int,
) -> PostedEntry:
    return post_entry(
        conn,
        tenant_id,
        invoice_entry_key(invoice_id),
        _entry_description(invoice_id),
        invoice_issued_postings(customer_id, total_minor, currency),
        now_ms,
        resource_id=invoice_id,
    )


@dataclass(frozen=True, slots=True)
class IssuedInvoice:
    tenant_id: str
    invoice_id: str
    customer_id: str
    total_minor: int
    currency: str


def _entry_description(invoice_id: str) -> str:
    return f"Invoice {invoice_id} issued"


def _account_ids(
    conn: Connection, tenant_id: str, specs: Sequence[PostingSpec], now_ms: int
) -> dict[tuple[str, str], str]:
    """(code, currency) -> account id for every spec, creating the missing accounts with one
    INSERT ... ON CONFLICT DO NOTHING (a racing creator wins harmlessly) and reading all back."""
    wanted = {(s.account_code, s.currency): s for s in specs}
    codes = sorted({code for code, _ in wanted})

    def read() -> dict[tuple[str, str], str]:
        rows = conn.execute(
            sa.select(accounts.c.code, accounts.c.currency, accounts.c.id).where(
                accounts.c.tenant_id == tenant_id, accounts.c.code.in_(codes)
            )
        ).all()
        return {(str(c), str(cur)): str(i) for c, cur, i in rows if (c, cur) in wanted}

    found = read()
    missing = sorted(set(wanted) - set(found))
    if missing:
        conn.execute(
            insert_ignoring_conflicts(conn.dialect.name, accounts),
            [
                {
                    "tenant_id": tenant_id,
                    "id": new_id("acct", now_ms),
                    "code": code,
                    "currency": currency,
                    "account_type": wanted[(code, currency)].account_type.value,
                    "customer_id": wanted[(code, currency)].customer_id,
                    "debits_posted": 0,
                    "credits_posted": 0,
                    "debits_pending": 0,
                    "credits_pending": 0,
                    "created_at_ms": now_ms,
                }
                for code, currency in missing
            ],
        )
        found = read()
    assert set(found) == set(wanted), "every posted account exists"
    return found


def post_invoices_issued(
    conn: Connection, tenant_id: str, issued: Sequence[IssuedInvoice], now_ms: int
) -> int:
    """Post `invoice:{id}:issued` for many invoices of one tenant at once: the same entries,
    postings and balances `post_invoice_issued` writes one by one, in a constant number of
    statements. Still idempotent by entry key: an entry that already exists goes through
    `post_entry` (which checks its content and writes nothing). Returns entries created."""
    if not issued:
        return 0
    keys = [invoice_entry_key(item.invoice_id) for item in issued]
    existing = set(
        conn.execute(
            sa.select(journal_entries.c.entry_key).where(
                journal_entries.c.tenant_id == tenant_id, journal_entries.c.entry_key.in_(keys)
            )
        ).scalars()
    )
    fresh = [item for item, key in zip(issued, keys, strict=True) if key not in existing]
    for item, key in zip(issued, keys, strict=True):
        if key in existing:
            post_invoice_issued(conn, tenant_id, item.invoice_id, item.customer_id,
                                item.total_minor, item.currency, now_ms)  # fmt: skip
    if not fresh:
        return 0
    specs_of = [invoice_issued_postings(i.customer_id, i.total_minor, i.currency) for i in fresh]
    account_of = _account_ids(conn, tenant_id, [s for specs in specs_of for s in specs], now_ms)
    # Lock every account in one global order before changing balances (no deadlocks).
    ordered = sorted(set(account_of.values()))
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.select(accounts.c.id)
            .where(accounts.c.tenant_id == tenant_id, accounts.c.id.in_(ordered))
            .order_by(accounts.c.id)
            .with_for_update()
        ).all()
    entries, posting_rows = [], []
    debits: dict[str, int] = defaultdict(int)
    credits: dict[str, int] = defaultdict(int)
    for item, specs in zip(fresh, specs_of, strict=True):
        assert_balanced(specs)
        entry_id = new_id("je", now_ms)
        description = _entry_description(item.invoice_id)
        entries.append(
            {
                "tenant_id": tenant_id,
                "id": entry_id,
                "entry_key": invoice_entry_key(item.invoice_id),
                "state": EntryState.POSTED.value,
                "description": description,
                "resource_id": item.invoice_id,
                "reverses": None,
                "content_hash": content_hash(description, specs, False, item.invoice_id),
                "created_at_ms": now_ms,
                "resolved_at_ms": now_ms,
                "pending_expires_at_ms": None,
            }
        )
        for seq, spec in enumerate(specs):
            account_id = account_of[(spec.account_code, spec.currency)]
            posting_rows.append(
                {
                    "tenant_id": tenant_id,
                    "entry_id": entry_id,
                    "seq": seq,
                    "account_id": account_id,
                    "direction": spec.direction.value,
                    "amount_minor": spec.amount_minor,
                    "currency": spec.currency,
                    "posted_amount_minor": None,
                }
            )
            side = debits if spec.direction is Direction.DEBIT else credits
            side[account_id] += spec.amount_minor
    conn.execute(journal_entries.insert(), entries)
    conn.execute(postings.insert(), posting_rows)
    _apply_balances(conn, tenant_id, ordered, debits, credits)
    return len(fresh)


def _apply_balances(
    conn: Connection,
    tenant_id: str,
    account_ids: Sequence[str],
    debits: dict[str, int],
    credits: dict[str, int],
) -> None:
    """Add each account's summed debits and credits to its posted balances (one statement)."""
    conn.execute(
        accounts.update()
        .where(accounts.c.tenant_id == tenant_id, accounts.c.id == sa.bindparam("b_id"))
        .values(
            debits_posted=accounts.c.debits_posted + sa.bindparam("b_debits"),
            credits_posted=accounts.c.credits_posted + sa.bindparam("b_credits"),
        ),
        [
            {"b_id": a, "b_debits": debits.get(a, 0), "b_credits": credits.get(a, 0)}
            for a in account_ids
        ],
    )
