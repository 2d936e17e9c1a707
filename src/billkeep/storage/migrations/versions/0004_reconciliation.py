"""reconciliation runs and breaks

Revision ID: 0004_reconciliation
Revises: 0003_billing
"""

from __future__ import annotations

revision = "0004_reconciliation"
down_revision = "0003_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by the work that adds these tables (see billkeep.storage.tables)."""


def downgrade() -> None:
    """Nothing to undo yet."""
