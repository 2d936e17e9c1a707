"""Tables of the reconciliation area: the webhook inbox, the per-payment state the webhooks build,
refunds seen only at the gateway, reconciliation runs and their breaks, and the staging tables a
run streams the gateway's records through (sorted by match key, see reconciliation.matching).
"""

from __future__ import annotations

import sqlalchemy as sa

from billkeep.storage.tables.base import id_column, metadata, tenant_column, time_column

__all__ = [
    "gateway_refunds",
    "payment_states",
    "reconciliation_breaks",
    "reconciliation_runs",
    "staged_gateway_fees",
    "staged_gateway_payments",
    "staged_gateway_reversals",
    "webhook_events",
]

MAX_REFERENCE_LENGTH = 255
MAX_EVENT_TYPE_LENGTH = 100
OUTCOME_LENGTH = 16

# The inbox. A row is written (and committed) before the webhook is acknowledged (I11); the unique
# (tenant, gateway, event id) makes a redelivery a no-op insert answered `duplicate: true`.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("gateway_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("event_type", sa.String(MAX_EVENT_TYPE_LENGTH), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    # The payment intent the event concerns, once known (for listing and releasing parked events).
    sa.Column("reference", sa.String(MAX_REFERENCE_LENGTH), nullable=True),
    # received | applied | duplicate | stale | parked | ignored | conflict | failed
    sa.Column("outcome", sa.String(OUTCOME_LENGTH), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    time_column("signed_at_ms"),
    time_column("received_at_ms"),
    time_column("next_attempt_at_ms", nullable=True),
    time_column("parked_at_ms", nullable=True),
    time_column("processed_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.UniqueConstraint("tenant_id", "gateway_id", "event_id"),
)
# The processor's queue: events still to process (received) or to retry (parked), by due time.
sa.Index("ix_webhook_events_due", webhook_events.c.outcome, webhook_events.c.next_attempt_at_ms)
sa.Index(
    "ix_webhook_events_tenant_outcome",
    webhook_events.c.tenant_id,
    webhook_events.c.outcome,
)
sa.Index(
    "ix_webhook_events_tenant_reference",
    webhook_events.c.tenant_id,
    webhook_events.c.reference,
)

# The monotonic payment state (domain.payment_state) of each payment billkeep knows, as canonical
# JSON: the join of every fact learned so far. Webhook processing loads, joins and saves it under
# the charge's row lock, so two events of one payment never lose each other's facts.
payment_states = sa.Table(
    "payment_states",
    metadata,
    tenant_column(),
    sa.Column("gateway_id", sa.String(40), nullable=False),
    sa.Column("reference", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("charge_id", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("state", sa.Text(), nullable=False),
    time_column("created_at_ms"),
    time_column("updated_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "gateway_id", "reference"),
)
sa.Index("ix_payment_states_charge", payment_states.c.tenant_id, payment_states.c.charge_id)

# Refunds the gateway reports that no billkeep refund command made (e.g. from the dashboard).
# They are recorded here, counted on the charge and posted to the ledger (`refund:{re}`).
gateway_refunds = sa.Table(
    "gateway_refunds",
    metadata,
    tenant_column(),
    sa.Column("gateway_id", sa.String(40), nullable=False),
    sa.Column("reference", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("charge_id", sa.String(40), nullable=False),
    sa.Column("payment_reference", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    time_column("created_at_ms"),
    time_column("updated_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "gateway_id", "reference"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
)

reconciliation_runs = sa.Table(
    "reconciliation_runs",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("command_id", sa.String(40), nullable=True),
    sa.Column("gateway_id", sa.String(40), nullable=False),
    time_column("from_ms"),
    time_column("to_ms"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("grace_period_ms", sa.BigInteger(), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    time_column("created_at_ms"),
    time_column("completed_at_ms", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

reconciliation_breaks = sa.Table(
    "reconciliation_breaks",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("match_key", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("gateway_reference", sa.String(MAX_REFERENCE_LENGTH), nullable=True),
    sa.Column("resource_id", sa.String(40), nullable=True),
    sa.Column("expected", sa.Text(), nullable=False),
    sa.Column("actual", sa.Text(), nullable=False),
    sa.Column("healed", sa.Boolean(), nullable=False),
    sa.Column("resolution", sa.String(64), nullable=True),
    time_column("created_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)
sa.Index(
    "ix_reconciliation_breaks_run",
    reconciliation_breaks.c.tenant_id,
    reconciliation_breaks.c.run_id,
    reconciliation_breaks.c.id,
)

# Staging: the gateway lists by creation time, the merge needs match-key order, so a run writes
# the window's payments here page by page and reads them back ORDER BY match_key. Rows are
# deleted when the run ends.
staged_gateway_payments = sa.Table(
    "staged_gateway_payments",
    metadata,
    tenant_column(),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("reference", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("match_key", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("command_ref", sa.String(MAX_REFERENCE_LENGTH), nullable=True),
    sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("charge_reference", sa.String(MAX_REFERENCE_LENGTH), nullable=True),
    sa.Column("amount_refunded_minor", sa.BigInteger(), nullable=False),
    time_column("created_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "run_id", "reference"),
)
sa.Index(
    "ix_staged_gateway_payments_key",
    staged_gateway_payments.c.tenant_id,
    staged_gateway_payments.c.run_id,
    staged_gateway_payments.c.match_key,
)

staged_gateway_fees = sa.Table(
    "staged_gateway_fees",
    metadata,
    tenant_column(),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("balance_transaction", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("charge_reference", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("fee_minor", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "run_id", "balance_transaction"),
)
sa.Index(
    "ix_staged_gateway_fees_charge",
    staged_gateway_fees.c.tenant_id,
    staged_gateway_fees.c.run_id,
    staged_gateway_fees.c.charge_reference,
)

# The window's refunds and disputes (money leaving at the gateway), read back ORDER BY match_key
# (`refund:{re}` / `dispute:{dp}`, the ledger entry's key). Rows are deleted when the run ends.
staged_gateway_reversals = sa.Table(
    "staged_gateway_reversals",
    metadata,
    tenant_column(),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("match_key", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("reference", sa.String(MAX_REFERENCE_LENGTH), nullable=False),
    sa.Column("payment_reference", sa.String(MAX_REFERENCE_LENGTH), nullable=True),
    sa.Column("command_ref", sa.String(MAX_REFERENCE_LENGTH), nullable=True),
    sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    time_column("created_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "run_id", "match_key"),
)
