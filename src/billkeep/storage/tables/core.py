"""Core tables: tenants, API keys, the command ledger, customers, charges, refunds, money ledger."""

from __future__ import annotations

import sqlalchemy as sa

from billkeep.storage.tables.base import id_column, metadata, tenant_column, time_column

__all__ = [
    "accounts",
    "api_keys",
    "charge_attempts",
    "charges",
    "command_transitions",
    "commands",
    "customers",
    "idempotency_keys",
    "journal_entries",
    "postings",
    "refunds",
    "tenants",
]

MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_OPERATION_LENGTH = 64
MAX_BUSINESS_KEY_LENGTH = 255

tenants = sa.Table(
    "tenants",
    metadata,
    tenant_column(),
    sa.Column("name", sa.String(200), nullable=False),
    time_column("created_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id"),
)

# The key itself embeds the tenant id, so a lookup is by (tenant_id, key_hash): no global index.
api_keys = sa.Table(
    "api_keys",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("prefix", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    time_column("created_at_ms"),
    time_column("revoked_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "key_hash"),
)

commands = sa.Table(
    "commands",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("operation", sa.String(MAX_OPERATION_LENGTH), nullable=False),
    sa.Column("idempotency_key", sa.String(MAX_IDEMPOTENCY_KEY_LENGTH), nullable=True),
    # Permanent key of an internal intent (e.g. invoice:{id}:attempt:{n}): never expires.
    sa.Column("business_key", sa.String(MAX_BUSINESS_KEY_LENGTH), nullable=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("request", sa.Text(), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("recovery_point", sa.String(64), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    time_column("lease_expires_at_ms", nullable=True),
    # Incremented on every claim; every write checks it, so a stale worker can never commit.
    sa.Column("fencing_token", sa.BigInteger(), nullable=False),
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_body", sa.Text(), nullable=True),
    sa.Column("resource_id", sa.String(40), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    time_column("next_attempt_at_ms", nullable=True),
    time_column("key_expires_at_ms", nullable=True),
    time_column("created_at_ms"),
    time_column("updated_at_ms"),
    time_column("completed_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    # One internal intent, one command, forever.
    sa.UniqueConstraint("tenant_id", "business_key"),
)
sa.Index("ix_commands_recoverable", commands.c.state, commands.c.next_attempt_at_ms)
sa.Index("ix_commands_tenant_operation", commands.c.tenant_id, commands.c.operation)

# The arbiter of idempotency keys. A row lives while the key is retained; the sweeper deletes
# expired rows (freeing the key) while the command and its history stay forever.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    tenant_column(),
    sa.Column("operation", sa.String(MAX_OPERATION_LENGTH), nullable=False),
    sa.Column("idempotency_key", sa.String(MAX_IDEMPOTENCY_KEY_LENGTH), nullable=False),
    sa.Column("command_id", sa.String(40), nullable=False),
    time_column("created_at_ms"),
    time_column("expires_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "operation", "idempotency_key"),
)
sa.Index("ix_idempotency_keys_expiry", idempotency_keys.c.expires_at_ms)

command_transitions = sa.Table(
    "command_transitions",
    metadata,
    tenant_column(),
    sa.Column("command_id", sa.String(40), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("from_state", sa.String(32), nullable=True),
    sa.Column("to_state", sa.String(32), nullable=False),
    sa.Column("recovery_point", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("detail", sa.Text(), nullable=True),
    time_column("at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "command_id", "seq"),
)

customers = sa.Table(
    "customers",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Column("payment_method", sa.String(255), nullable=True),
    sa.Column("metadata", sa.Text(), nullable=False),
    sa.Column("command_id", sa.String(40), nullable=True),
    time_column("created_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "external_id"),
)

charges = sa.Table(
    "charges",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("command_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount_refunded_minor", sa.BigInteger(), nullable=False),
    sa.Column("gateway", sa.String(40), nullable=False),
    sa.Column("gateway_reference", sa.String(255), nullable=True),
    sa.Column("payment_method", sa.String(255), nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("failure_message", sa.Text(), nullable=True),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("metadata", sa.Text(), nullable=False),
    sa.Column("current_attempt", sa.Integer(), nullable=False),
    # Set when the charge pays an invoice: the invoice posted the sale, the charge only the payment.
    sa.Column("invoice_id", sa.String(40), nullable=True),
    time_column("created_at_ms"),
    time_column("updated_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    # One charge per command: a resumed command finds its charge instead of creating another.
    sa.UniqueConstraint("tenant_id", "command_id"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.CheckConstraint(
        "amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_minor", name="refund_bounds"
    ),
)
sa.Index("ix_charges_customer", charges.c.tenant_id, charges.c.customer_id)
sa.Index("ix_charges_reference", charges.c.tenant_id, charges.c.gateway_reference)

# One row per call to the gateway for a charge. The (charge, attempt_number) key means a new
# attempt is a deliberate, recorded decision; the gateway idempotency key is derived from it.
charge_attempts = sa.Table(
    "charge_attempts",
    metadata,
    tenant_column(),
    sa.Column("charge_id", sa.String(40), nullable=False),
    sa.Column("attempt_number", sa.Integer(), nullable=False),
    sa.Column("gateway_idempotency_key", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("gateway_reference", sa.String(255), nullable=True),
    sa.Column("resolution", sa.String(64), nullable=True),
    sa.Column("resolve_tries", sa.Integer(), nullable=False),
    time_column("sent_at_ms", nullable=True),
    time_column("created_at_ms"),
    time_column("resolved_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "charge_id", "attempt_number"),
)

refunds = sa.Table(
    "refunds",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("charge_id", sa.String(40), nullable=False),
    sa.Column("command_id", sa.String(40), nullable=False),
    sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(255), nullable=True),
    sa.Column("gateway_idempotency_key", sa.String(255), nullable=False),
    sa.Column("gateway_reference", sa.String(255), nullable=True),
    time_column("created_at_ms"),
    time_column("updated_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "command_id"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
)
sa.Index("ix_refunds_charge", refunds.c.tenant_id, refunds.c.charge_id)

accounts = sa.Table(
    "accounts",
    metadata,
    tenant_column(),
    id_column(),
    # e.g. "customer_receivable:cus_..." or "gateway_clearing": unique per tenant and currency.
    sa.Column("code", sa.String(200), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("account_type", sa.String(16), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=True),
    sa.Column("debits_posted", sa.BigInteger(), nullable=False),
    sa.Column("credits_posted", sa.BigInteger(), nullable=False),
    sa.Column("debits_pending", sa.BigInteger(), nullable=False),
    sa.Column("credits_pending", sa.BigInteger(), nullable=False),
    time_column("created_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "code", "currency"),
    sa.CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
        name="balances_non_negative",
    ),
)
sa.Index("ix_accounts_customer", accounts.c.tenant_id, accounts.c.customer_id)

journal_entries = sa.Table(
    "journal_entries",
    metadata,
    tenant_column(),
    id_column(),
    # Idempotency of postings: the business fact (e.g. "payment:pi_1:succeeded") names the entry.
    sa.Column("entry_key", sa.String(255), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("resource_id", sa.String(255), nullable=True),
    sa.Column("reverses", sa.String(40), nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    time_column("created_at_ms"),
    time_column("resolved_at_ms", nullable=True),
    time_column("pending_expires_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "entry_key"),
)
sa.Index("ix_journal_entries_resource", journal_entries.c.tenant_id, journal_entries.c.resource_id)
# An entry is reversed at most once, whatever reversal key a caller uses (NULLs do not collide).
sa.Index(
    "uq_journal_entries_reverses",
    journal_entries.c.tenant_id,
    journal_entries.c.reverses,
    unique=True,
)

postings = sa.Table(
    "postings",
    metadata,
    tenant_column(),
    sa.Column("entry_id", sa.String(40), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("account_id", sa.String(40), nullable=False),
    sa.Column("direction", sa.String(6), nullable=False),
    sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # For two-phase entries: how much of this posting was finally posted (partial post), else NULL.
    sa.Column("posted_amount_minor", sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "entry_id", "seq"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.CheckConstraint("direction IN ('debit', 'credit')", name="direction_valid"),
)
sa.Index("ix_postings_account", postings.c.tenant_id, postings.c.account_id)
