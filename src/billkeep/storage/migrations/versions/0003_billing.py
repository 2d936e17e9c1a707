"""billing catalogue, subscriptions, usage and invoices

Revision ID: 0003_billing
Revises: 0002_gateways
"""

from __future__ import annotations

revision = "0003_billing"
down_revision = "0002_gateways"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by the work that adds these tables (see billkeep.storage.tables)."""


def downgrade() -> None:
    """Nothing to undo yet."""
