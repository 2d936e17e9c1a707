"""billing catalogue, subscriptions, usage and invoices

Revision ID: 0003_billing
Revises: 0002_gateways
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_billing"
down_revision = "0002_gateways"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_runs",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("as_of_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("invoices_created", sa.Integer(), nullable=False),
        sa.Column("invoices_existing", sa.Integer(), nullable=False),
        sa.Column("charges_attempted", sa.Integer(), nullable=False),
        sa.Column("charges_succeeded", sa.Integer(), nullable=False),
        sa.Column("charges_failed", sa.Integer(), nullable=False),
        sa.Column("charges_pending", sa.Integer(), nullable=False),
        sa.Column("command_id", sa.String(length=40), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("completed_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_billing_runs")),
        sa.UniqueConstraint(
            "tenant_id", "command_id", name=op.f("uq_billing_runs_tenant_id_command_id")
        ),
    )
    op.create_table(
        "invoice_attempts",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("business_key", sa.String(length=255), nullable=False),
        sa.Column("command_id", sa.String(length=40), nullable=True),
        sa.Column("charge_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "invoice_id", "attempt_number", name=op.f("pk_invoice_attempts")
        ),
    )
    with op.batch_alter_table("invoice_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoice_attempts_charge", ["tenant_id", "charge_id"], unique=False
        )

    op.create_table(
        "invoice_lines",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=400), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("period_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("period_end_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "invoice_id", "seq", name=op.f("pk_invoice_lines")),
    )
    op.create_table(
        "invoices",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("period_index", sa.Integer(), nullable=False),
        sa.Column("period_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("period_end_ms", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("charge_id", sa.String(length=40), nullable=True),
        sa.Column("billing_run_id", sa.String(length=40), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("paid_at_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "amount_paid_minor >= 0 AND amount_paid_minor <= total_minor",
            name=op.f("ck_invoices_paid_bounds"),
        ),
        sa.CheckConstraint("total_minor >= 0", name=op.f("ck_invoices_total_non_negative")),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_invoices")),
        sa.UniqueConstraint(
            "tenant_id",
            "subscription_id",
            "period_start_ms",
            name=op.f("uq_invoices_tenant_id_subscription_id_period_start_ms"),
        ),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoices_collectable", ["status", "next_attempt_at_ms"], unique=False
        )
        batch_op.create_index("ix_invoices_customer", ["tenant_id", "customer_id"], unique=False)

    op.create_table(
        "metrics",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("aggregation", sa.String(length=16), nullable=False),
        sa.Column("property", sa.String(length=64), nullable=True),
        sa.Column("command_id", sa.String(length=40), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_metrics")),
        sa.UniqueConstraint("tenant_id", "code", name=op.f("uq_metrics_tenant_id_code")),
    )
    op.create_table(
        "plans",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("interval_count", sa.Integer(), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("command_id", sa.String(length=40), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_plans")),
        sa.UniqueConstraint("tenant_id", "code", name=op.f("uq_plans_tenant_id_code")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("anchor_ms", sa.BigInteger(), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("ended_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("next_period_index", sa.Integer(), nullable=False),
        sa.Column("next_period_end_ms", sa.BigInteger(), nullable=True),
        sa.Column("billing_error", sa.Text(), nullable=True),
        sa.Column("command_id", sa.String(length=40), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint(
            "tenant_id", "command_id", name=op.f("uq_subscriptions_tenant_id_command_id")
        ),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscriptions_customer", ["tenant_id", "customer_id"], unique=False
        )
        batch_op.create_index("ix_subscriptions_due", ["next_period_end_ms"], unique=False)

    op.create_table(
        "usage_events",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name=op.f("pk_usage_events")),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_events_customer", ["tenant_id", "customer_id", "timestamp_ms"], unique=False
        )
        batch_op.create_index(
            "ix_usage_events_subscription",
            ["tenant_id", "subscription_id", "timestamp_ms"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_subscription")
        batch_op.drop_index("ix_usage_events_customer")

    op.drop_table("usage_events")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_subscriptions_due")
        batch_op.drop_index("ix_subscriptions_customer")

    op.drop_table("subscriptions")
    op.drop_table("plans")
    op.drop_table("metrics")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_customer")
        batch_op.drop_index("ix_invoices_collectable")

    op.drop_table("invoices")
    op.drop_table("invoice_lines")
    with op.batch_alter_table("invoice_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_attempts_charge")

    op.drop_table("invoice_attempts")
    op.drop_table("billing_runs")
