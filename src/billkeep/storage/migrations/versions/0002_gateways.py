"""gateway configurations and webhook inbox

Revision ID: 0002_gateways
Revises: 0001_core
"""

from __future__ import annotations

revision = "0002_gateways"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by the work that adds these tables (see billkeep.storage.tables)."""


def downgrade() -> None:
    """Nothing to undo yet."""
