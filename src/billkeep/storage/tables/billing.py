"""Billing tables: the catalogue (metrics, plans), subscriptions, usage events, invoices, runs.

Uniqueness that billing correctness rests on is enforced here, inside the transaction of the effect:
- `usage_events` PK (tenant_id, event_id): an event id is stored once per tenant forever (I9);
  `usage_events.invoice_id` records the one invoice that consumed the event, set by a conditional
  UPDATE (`invoice_id IS NULL`) in the transaction that creates that invoice.
- `invoices` unique (tenant_id, subscription_id, period_start_ms): one invoice per period (I6).
- `invoice_attempts` PK (tenant_id, invoice_id, attempt_number): one charge command per attempt
  (its business key is `invoice:{id}:attempt:{n}`).
- `subscriptions.next_period_end_ms` is the scan key of billing runs: a subscription is due when
  its next uninvoiced period has ended (NULL when no period is left to bill).
"""

from __future__ import annotations

import sqlalchemy as sa

from billkeep.storage.tables.base import id_column, metadata, tenant_column, time_column

__all__ = [
    "billing_runs",
    "invoice_attempts",
    "invoice_lines",
    "invoices",
    "metrics",
    "plans",
    "subscriptions",
    "usage_events",
]

CODE_LENGTH = 64
NAME_LENGTH = 200
EVENT_ID_LENGTH = 255
SUBJECT_ID_LENGTH = 255
DESCRIPTION_LENGTH = 400

metrics = sa.Table(
    "metrics",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("code", sa.String(CODE_LENGTH), nullable=False),
    sa.Column("name", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("aggregation", sa.String(16), nullable=False),
    sa.Column("property", sa.String(CODE_LENGTH), nullable=True),
    sa.Column("command_id", sa.String(40), nullable=False),
    time_column("created_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "code"),
)

# Plans are immutable once created (there is no update): a subscription's invoices always price
# with the plan it was created on. `definition` is the canonical JSON of the validated plan body.
plans = sa.Table(
    "plans",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("code", sa.String(CODE_LENGTH), nullable=False),
    sa.Column("name", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("interval", sa.String(8), nullable=False),
    sa.Column("interval_count", sa.Integer(), nullable=False),
    sa.Column("trial_days", sa.Integer(), nullable=False),
    sa.Column("definition", sa.Text(), nullable=False),
    sa.Column("command_id", sa.String(40), nullable=False),
    time_column("created_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "code"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("plan_id", sa.String(40), nullable=False),
    # Payment standing: active | past_due. Trialing and canceled are derived from the times.
    sa.Column("status", sa.String(16), nullable=False),
    time_column("start_at_ms"),
    # Start of billing period 0 (the trial end; the start itself without a trial).
    time_column("anchor_ms"),
    sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
    time_column("canceled_at_ms", nullable=True),
    # Nothing at or after this instant is billed (set by a cancellation).
    time_column("ended_at_ms", nullable=True),
    sa.Column("next_period_index", sa.Integer(), nullable=False),
    time_column("next_period_end_ms", nullable=True),
    # Set when billing this subscription failed for a reason a retry cannot fix (e.g. an amount
    # overflow); runs skip it until an operator clears it.
    sa.Column("billing_error", sa.Text(), nullable=True),
    sa.Column("command_id", sa.String(40), nullable=False),
    time_column("created_at_ms"),
    time_column("updated_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "command_id"),
)
sa.Index("ix_subscriptions_due", subscriptions.c.next_period_end_ms)
sa.Index("ix_subscriptions_customer", subscriptions.c.tenant_id, subscriptions.c.customer_id)

usage_events = sa.Table(
    "usage_events",
    metadata,
    tenant_column(),
    sa.Column("event_id", sa.String(EVENT_ID_LENGTH), nullable=False),
    sa.Column("customer_id", sa.String(SUBJECT_ID_LENGTH), nullable=True),
    sa.Column("subscription_id", sa.String(SUBJECT_ID_LENGTH), nullable=True),
    sa.Column("metric", sa.String(CODE_LENGTH), nullable=False),
    time_column("timestamp_ms"),
    sa.Column("properties", sa.Text(), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # The ingestion batch that stored the row: tells a batch which of its rows it inserted.
    sa.Column("batch_id", sa.String(40), nullable=False),
    time_column("received_at_ms"),
    # The one invoice that consumed this event (I9); NULL until billed.
    sa.Column("invoice_id", sa.String(40), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "event_id"),
)
sa.Index(
    "ix_usage_events_subscription",
    usage_events.c.tenant_id,
    usage_events.c.subscription_id,
    usage_events.c.timestamp_ms,
)
sa.Index(
    "ix_usage_events_customer",
    usage_events.c.tenant_id,
    usage_events.c.customer_id,
    usage_events.c.timestamp_ms,
)

invoices = sa.Table(
    "invoices",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("subscription_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("period_index", sa.Integer(), nullable=False),
    time_column("period_start_ms"),
    time_column("period_end_ms"),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total_minor", sa.BigInteger(), nullable=False),
    sa.Column("amount_paid_minor", sa.BigInteger(), nullable=False),
    # open | paid | uncollectible | void
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt_count", sa.Integer(), nullable=False),
    # When the next charge attempt is due (also the lease of an attempt in flight); NULL: none.
    time_column("next_attempt_at_ms", nullable=True),
    sa.Column("charge_id", sa.String(40), nullable=True),
    sa.Column("billing_run_id", sa.String(40), nullable=True),
    time_column("created_at_ms"),
    time_column("updated_at_ms"),
    time_column("paid_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    # I6: each (subscription, period) has exactly one invoice, whatever runs overlap.
    sa.UniqueConstraint("tenant_id", "subscription_id", "period_start_ms"),
    sa.CheckConstraint("total_minor >= 0", name="total_non_negative"),
    sa.CheckConstraint(
        "amount_paid_minor >= 0 AND amount_paid_minor <= total_minor", name="paid_bounds"
    ),
)
sa.Index("ix_invoices_collectable", invoices.c.status, invoices.c.next_attempt_at_ms)
sa.Index("ix_invoices_customer", invoices.c.tenant_id, invoices.c.customer_id)

invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    tenant_column(),
    sa.Column("invoice_id", sa.String(40), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    # price | adjustment (late usage of an earlier, already invoiced period)
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("description", sa.String(DESCRIPTION_LENGTH), nullable=False),
    sa.Column("metric", sa.String(CODE_LENGTH), nullable=True),
    sa.Column("quantity", sa.BigInteger(), nullable=False),
    sa.Column("unit_amount_minor", sa.BigInteger(), nullable=False),
    sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    time_column("period_start_ms"),
    time_column("period_end_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "invoice_id", "seq"),
)

invoice_attempts = sa.Table(
    "invoice_attempts",
    metadata,
    tenant_column(),
    sa.Column("invoice_id", sa.String(40), nullable=False),
    sa.Column("attempt_number", sa.Integer(), nullable=False),
    sa.Column("business_key", sa.String(255), nullable=False),
    sa.Column("command_id", sa.String(40), nullable=True),
    sa.Column("charge_id", sa.String(40), nullable=True),
    # pending | succeeded | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("failure_code", sa.String(64), nullable=True),
    time_column("created_at_ms"),
    time_column("resolved_at_ms", nullable=True),
    # I6: at most one charge intent per attempt number.
    sa.PrimaryKeyConstraint("tenant_id", "invoice_id", "attempt_number"),
)
sa.Index("ix_invoice_attempts_charge", invoice_attempts.c.tenant_id, invoice_attempts.c.charge_id)

billing_runs = sa.Table(
    "billing_runs",
    metadata,
    tenant_column(),
    id_column(),
    time_column("as_of_ms"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("invoices_created", sa.Integer(), nullable=False),
    sa.Column("invoices_existing", sa.Integer(), nullable=False),
    sa.Column("charges_attempted", sa.Integer(), nullable=False),
    sa.Column("charges_succeeded", sa.Integer(), nullable=False),
    sa.Column("charges_failed", sa.Integer(), nullable=False),
    sa.Column("charges_pending", sa.Integer(), nullable=False),
    sa.Column("command_id", sa.String(40), nullable=False),
    time_column("created_at_ms"),
    time_column("completed_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "command_id"),
)
