"""Upgrading an empty database to head gives exactly the declared schema, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from billkeep.storage.database import Database
from billkeep.storage.migrate import current_revision, head_revision, upgrade_to_head
from billkeep.storage.tables import metadata


def test_migrated_schema_equals_declared_schema(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade_to_head(db)  # already at head: must be a no-op
        assert current_revision(db) == head_revision()
        with db.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), metadata
            )
        assert diff == [], f"migrations and tables/ disagree: {diff}"
    finally:
        db.dispose()


def test_every_primary_and_unique_key_leads_with_tenant_id() -> None:
    for table in metadata.tables.values():
        if table.name == "tenants":
            continue
        assert next(iter(table.primary_key.columns)).name == "tenant_id", table.name
        for constraint in table.constraints:
            columns = getattr(constraint, "columns", None)
            if constraint.__class__.__name__ == "UniqueConstraint" and columns is not None:
                assert next(iter(columns)).name == "tenant_id", f"{table.name}: {constraint.name}"
