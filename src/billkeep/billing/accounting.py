"""The ledger entry an issued invoice posts: the customer owes the total (receivable up, revenue up).

The payment of the invoice is posted by the charge (`payment:{reference}:succeeded`), which skips
its own sale entry because the charge carries the invoice id: the sale is posted exactly once,
here, under the entry key `invoice:{id}:issued`.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from billkeep.domain.ledger import AccountType, Direction, PostingSpec
from billkeep.engine.accounting import REVENUE_SALES, receivable_code
from billkeep.engine.ledger import PostedEntry, post_entry

__all__ = ["invoice_entry_key", "invoice_issued_postings", "post_invoice_issued"]


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
        f"Invoice {invoice_id} issued",
        invoice_issued_postings(customer_id, total_minor, currency),
        now_ms,
        resource_id=invoice_id,
    )
