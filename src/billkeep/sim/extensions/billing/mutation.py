"""Mutation `invoice_unique`: invoices lose their unique (tenant_id, subscription_id,
period_start_ms), in the run's own schema only.

SQLite: the table is rebuilt from its own DDL without that constraint (the run's file is thrown
away afterwards). PostgreSQL: the constraint is dropped and put back after the run (the run's
billing rows are deleted first: duplicates would stop it). The set-based invoicing on PostgreSQL
names the constraint as its ON CONFLICT arbiter, which fails loudly once it is gone; the mutation
makes that insert untargeted (`ON CONFLICT DO NOTHING`) so runs keep working silently, the case
the sweep must catch (docs/verification.md).
"""

from __future__ import annotations

import re
from contextlib import ExitStack

from billkeep.billing import invoicing_pg
from billkeep.sim.mutations import Mutation, _patch
from billkeep.storage.database import Database

__all__ = ["INVOICE_UNIQUE", "drop_invoice_unique_sqlite"]

CONSTRAINT = "uq_invoices_tenant_id_subscription_id_period_start_ms"
_TARGETED = "ON CONFLICT (tenant_id, subscription_id, period_start_ms) DO NOTHING"


def drop_invoice_unique_sqlite(db: Database) -> None:
    """Rebuild the SQLite `invoices` table from its own DDL minus the period unique constraint."""
    with db.write() as conn:
        ddl = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'invoices'"
        ).scalar_one()
        indexes = [
            str(sql)
            for (sql,) in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'invoices'"
                " AND sql IS NOT NULL ORDER BY name"
            ).all()
        ]
        weakened, count = re.subn(rf",\s*CONSTRAINT {CONSTRAINT} UNIQUE \([^)]*\)", "", str(ddl))
        assert count == 1, f"constraint {CONSTRAINT} not found in {ddl}"
        conn.exec_driver_sql("ALTER TABLE invoices RENAME TO invoices_constrained")
        conn.exec_driver_sql(weakened)
        conn.exec_driver_sql("INSERT INTO invoices SELECT * FROM invoices_constrained")
        conn.exec_driver_sql("DROP TABLE invoices_constrained")
        for sql in indexes:
            conn.exec_driver_sql(sql)


def _invoice_unique(stack: ExitStack, db: Database) -> None:
    if db.dialect == "sqlite":
        drop_invoice_unique_sqlite(db)
        return
    with db.write() as conn:
        conn.exec_driver_sql(f'ALTER TABLE invoices DROP CONSTRAINT "{CONSTRAINT}"')
    assert _TARGETED in invoicing_pg._INSERT_INVOICES
    _patch(
        stack,
        invoicing_pg,
        "_INSERT_INVOICES",
        invoicing_pg._INSERT_INVOICES.replace(_TARGETED, "ON CONFLICT DO NOTHING"),
    )

    def restore() -> None:
        with db.write() as conn:
            for table in ("invoice_lines", "invoice_attempts", "invoices"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
            conn.exec_driver_sql("UPDATE usage_events SET invoice_id = NULL")
            conn.exec_driver_sql(
                f'ALTER TABLE invoices ADD CONSTRAINT "{CONSTRAINT}"'
                " UNIQUE (tenant_id, subscription_id, period_start_ms)"
            )

    stack.callback(restore)


INVOICE_UNIQUE = Mutation(
    "invoice_unique",
    "unique (tenant, subscription, period_start) on invoices (I6)",
    _invoice_unique,
)
