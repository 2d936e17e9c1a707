"""staging table for the refunds and disputes a reconciliation run reads from the gateway

Revision ID: 0006_staged_reversals
Revises: 0005_single_reversal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_staged_reversals"
down_revision = "0005_single_reversal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staged_gateway_reversals",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("match_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("payment_reference", sa.String(length=255), nullable=True),
        sa.Column("command_ref", sa.String(length=255), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "run_id", "match_key", name=op.f("pk_staged_gateway_reversals")
        ),
    )


def downgrade() -> None:
    op.drop_table("staged_gateway_reversals")
