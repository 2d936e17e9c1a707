"""Schema migrations (Alembic) run from code: `billkeep migrate` and test fixtures use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from billkeep.storage.database import Database

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade_to_head"]

_MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    return config


def upgrade_to_head(db: Database) -> None:
    config = alembic_config()
    # On SQLite, the migration must not run inside our BEGIN IMMEDIATE hook's transaction handling
    # twice: alembic manages its own transaction on the connection we give it.
    with db.engine.connect() as conn:
        conn.info["billkeep_begin"] = "IMMEDIATE"
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
