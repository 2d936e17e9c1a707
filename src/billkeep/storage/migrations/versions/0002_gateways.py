"""gateway configurations and webhook inbox

Revision ID: 0002_gateways
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_gateways"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_configs",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("api_base", sa.String(length=500), nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=False),
        sa.Column("webhook_secrets_encrypted", sa.Text(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("command_id", sa.String(length=40), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_gateway_configs")),
    )
    with op.batch_alter_table("gateway_configs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_gateway_configs_default", ["tenant_id", "is_default"], unique=False
        )
        batch_op.create_index("ix_gateway_configs_id", ["id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gateway_configs", schema=None) as batch_op:
        batch_op.drop_index("ix_gateway_configs_id")
        batch_op.drop_index("ix_gateway_configs_default")
    op.drop_table("gateway_configs")
