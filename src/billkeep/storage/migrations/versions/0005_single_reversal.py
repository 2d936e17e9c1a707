"""an entry is reversed at most once: unique (tenant_id, reverses) on journal_entries

Revision ID: 0005_single_reversal
Revises: 0004_reconciliation
"""

from __future__ import annotations

from alembic import op

revision = "0005_single_reversal"
down_revision = "0004_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "uq_journal_entries_reverses",
        "journal_entries",
        ["tenant_id", "reverses"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_journal_entries_reverses", table_name="journal_entries")
