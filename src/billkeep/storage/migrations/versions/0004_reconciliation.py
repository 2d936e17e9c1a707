"""reconciliation runs and breaks, webhook inbox, payment states, gateway refunds, staging

Revision ID: 0004_reconciliation
Revises: 0003_billing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_reconciliation"
down_revision = "0003_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("gateway_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("signed_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("parked_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("processed_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint(
            "tenant_id",
            "gateway_id",
            "event_id",
            name=op.f("uq_webhook_events_tenant_id_gateway_id_event_id"),
        ),
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_events_due", ["outcome", "next_attempt_at_ms"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_events_tenant_outcome", ["tenant_id", "outcome"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_events_tenant_reference", ["tenant_id", "reference"], unique=False
        )

    op.create_table(
        "payment_states",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("gateway_id", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("charge_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "gateway_id", "reference", name=op.f("pk_payment_states")
        ),
    )
    with op.batch_alter_table("payment_states", schema=None) as batch_op:
        batch_op.create_index("ix_payment_states_charge", ["tenant_id", "charge_id"], unique=False)

    op.create_table(
        "gateway_refunds",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("gateway_id", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("charge_id", sa.String(length=40), nullable=False),
        sa.Column("payment_reference", sa.String(length=255), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_gateway_refunds_amount_positive")),
        sa.PrimaryKeyConstraint(
            "tenant_id", "gateway_id", "reference", name=op.f("pk_gateway_refunds")
        ),
    )

    op.create_table(
        "reconciliation_runs",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("command_id", sa.String(length=40), nullable=True),
        sa.Column("gateway_id", sa.String(length=40), nullable=False),
        sa.Column("from_ms", sa.BigInteger(), nullable=False),
        sa.Column("to_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("grace_period_ms", sa.BigInteger(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("completed_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_reconciliation_runs")),
    )

    op.create_table(
        "reconciliation_breaks",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("match_key", sa.String(length=255), nullable=False),
        sa.Column("gateway_reference", sa.String(length=255), nullable=True),
        sa.Column("resource_id", sa.String(length=40), nullable=True),
        sa.Column("expected", sa.Text(), nullable=False),
        sa.Column("actual", sa.Text(), nullable=False),
        sa.Column("healed", sa.Boolean(), nullable=False),
        sa.Column("resolution", sa.String(length=64), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_reconciliation_breaks")),
    )
    with op.batch_alter_table("reconciliation_breaks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reconciliation_breaks_run", ["tenant_id", "run_id", "id"], unique=False
        )

    op.create_table(
        "staged_gateway_payments",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("match_key", sa.String(length=255), nullable=False),
        sa.Column("command_ref", sa.String(length=255), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("charge_reference", sa.String(length=255), nullable=True),
        sa.Column("amount_refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "run_id", "reference", name=op.f("pk_staged_gateway_payments")
        ),
    )
    with op.batch_alter_table("staged_gateway_payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_staged_gateway_payments_key", ["tenant_id", "run_id", "match_key"], unique=False
        )

    op.create_table(
        "staged_gateway_fees",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("balance_transaction", sa.String(length=255), nullable=False),
        sa.Column("charge_reference", sa.String(length=255), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "run_id", "balance_transaction", name=op.f("pk_staged_gateway_fees")
        ),
    )
    with op.batch_alter_table("staged_gateway_fees", schema=None) as batch_op:
        batch_op.create_index(
            "ix_staged_gateway_fees_charge",
            ["tenant_id", "run_id", "charge_reference"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("staged_gateway_fees", schema=None) as batch_op:
        batch_op.drop_index("ix_staged_gateway_fees_charge")
    op.drop_table("staged_gateway_fees")
    with op.batch_alter_table("staged_gateway_payments", schema=None) as batch_op:
        batch_op.drop_index("ix_staged_gateway_payments_key")
    op.drop_table("staged_gateway_payments")
    with op.batch_alter_table("reconciliation_breaks", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliation_breaks_run")
    op.drop_table("reconciliation_breaks")
    op.drop_table("reconciliation_runs")
    op.drop_table("gateway_refunds")
    with op.batch_alter_table("payment_states", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_states_charge")
    op.drop_table("payment_states")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_tenant_reference")
        batch_op.drop_index("ix_webhook_events_tenant_outcome")
        batch_op.drop_index("ix_webhook_events_due")
    op.drop_table("webhook_events")
