"""Which journal entries each business fact posts. Entry keys name the fact, never the message
that told us about it, so learning a fact twice (API response, retry, webhook, reconciliation)
posts it once."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from billkeep.domain.ledger import AccountType, Direction, PostingSpec
from billkeep.engine.ledger import PostedEntry, post_entry

__all__ = [
    "post_charge_sale",
    "post_dispute",
    "post_gateway_fee",
    "post_payment_succeeded",
    "post_refund_succeeded",
    "receivable_code",
]

REVENUE_SALES = "revenue:sales"
REVENUE_REFUNDS = "revenue:refunds"  # contra-revenue: refunds are debited here
EXPENSE_GATEWAY_FEES = "expense:gateway_fees"
EXPENSE_DISPUTES = "expense:disputes"


def receivable_code(customer_id: str) -> str:
    return f"customer_receivable:{customer_id}"


def clearing_code(gateway: str) -> str:
    return f"gateway_clearing:{gateway}"


def _pair(
    debit: tuple[str, AccountType, str | None],
    credit: tuple[str, AccountType, str | None],
    amount_minor: int,
    currency: str,
) -> list[PostingSpec]:
    return [
        PostingSpec(debit[0], debit[1], Direction.DEBIT, amount_minor, currency, debit[2]),
        PostingSpec(credit[0], credit[1], Direction.CREDIT, amount_minor, currency, credit[2]),
    ]


def post_charge_sale(
    conn: Connection,
    tenant_id: str,
    charge_id: str,
    customer_id: str,
    amount_minor: int,
    currency: str,
    now_ms: int,
) -> PostedEntry:
    """A one-off charge is a sale: the customer owes it (an invoice posts its own sale instead)."""
    return post_entry(
        conn,
        tenant_id,
        f"charge:{charge_id}:sale",
        f"Sale for charge {charge_id}",
        _pair(
            (receivable_code(customer_id), AccountType.ASSET, customer_id),
            (REVENUE_SALES, AccountType.REVENUE, None),
            amount_minor,
            currency,
        ),
        now_ms,
        resource_id=charge_id,
    )


def post_payment_succeeded(
    conn: Connection,
    tenant_id: str,
    reference: str,
    resource_id: str,
    customer_id: str,
    gateway: str,
    amount_minor: int,
    currency: str,
    now_ms: int,
) -> PostedEntry:
    """Money arrived at the gateway: clearing up, the customer's receivable settled."""
    return post_entry(
        conn,
        tenant_id,
        f"payment:{reference}:succeeded",
        f"Payment {reference}",
        _pair(
            (clearing_code(gateway), AccountType.ASSET, None),
            (receivable_code(customer_id), AccountType.ASSET, customer_id),
            amount_minor,
            currency,
        ),
        now_ms,
        resource_id=resource_id,
    )


def _post_expense_or_contra(
    conn: Connection,
    tenant_id: str,
    entry_key: str,
    description: str,
    debit: tuple[str, AccountType],
    resource_id: str,
    gateway: str,
    amount_minor: int,
    currency: str,
    now_ms: int,
) -> PostedEntry:
    """Money leaving the gateway's clearing account (a refund, a fee, a dispute)."""
    return post_entry(
        conn,
        tenant_id,
        entry_key,
        description,
        _pair(
            (debit[0], debit[1], None),
            (clearing_code(gateway), AccountType.ASSET, None),
            amount_minor,
            currency,
        ),
        now_ms,
        resource_id=resource_id,
    )


def post_refund_succeeded(
    conn: Connection,
    tenant_id: str,
    refund_reference: str,
    resource_id: str,
    gateway: str,
    amount_minor: int,
    currency: str,
    now_ms: int,
) -> PostedEntry:
    return _post_expense_or_contra(
        conn,
        tenant_id,
        f"refund:{refund_reference}",
        f"Refund {refund_reference}",
        (REVENUE_REFUNDS, AccountType.REVENUE),
        resource_id,
        gateway,
        amount_minor,
        currency,
        now_ms,
    )


def post_gateway_fee(
    conn: Connection,
    tenant_id: str,
    balance_transaction: str,
    resource_id: str,
    gateway: str,
    fee_minor: int,
    currency: str,
    now_ms: int,
) -> PostedEntry:
    return _post_expense_or_contra(
        conn,
        tenant_id,
        f"fee:{balance_transaction}",
        f"Gateway fee {balance_transaction}",
        (EXPENSE_GATEWAY_FEES, AccountType.EXPENSE),
        resource_id,
        gateway,
        fee_minor,
        currency,
        now_ms,
    )


def post_dispute(
    conn: Connection,
    tenant_id: str,
    dispute_id: str,
    resource_id: str,
    gateway: str,
    amount_minor: int,
    currency: str,
    now_ms: int,
) -> PostedEntry:
    return _post_expense_or_contra(
        conn,
        tenant_id,
        f"dispute:{dispute_id}",
        f"Dispute {dispute_id}",
        (EXPENSE_DISPUTES, AccountType.EXPENSE),
        resource_id,
        gateway,
        amount_minor,
        currency,
        now_ms,
    )
