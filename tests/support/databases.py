"""Throw-away databases for tests: a SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL databases are cloned from a migrated template (CREATE DATABASE ... TEMPLATE), which is
much faster than migrating each one. The server comes from BILLKEEP_TEST_PG_URL (an admin URL,
default the local server). When it is unreachable, PostgreSQL tests are skipped, unless
BILLKEEP_REQUIRE_POSTGRES=1 (CI sets it), in which case they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head

__all__ = ["PG_ADMIN_URL", "PostgresProvisioner", "pg_url_for", "postgres_available"]

PG_ADMIN_URL = os.environ.get(
    "BILLKEEP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pg_url_for(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _admin_engine() -> sa.Engine:
    return sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )


def postgres_available() -> bool:
    try:
        engine = _admin_engine()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        if os.environ.get("BILLKEEP_REQUIRE_POSTGRES") == "1":
            raise
        return False


class PostgresProvisioner:
    """Creates one migrated template per test session and clones it per test."""

    def __init__(self) -> None:
        self.template = f"billkeep_tmpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._admin = _admin_engine()
        self._created: list[str] = []
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.template}"'))
        db = Database(pg_url_for(self.template))
        upgrade_to_head(db)
        db.dispose()

    @contextmanager
    def database(self) -> Iterator[str]:
        name = f"billkeep_t_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        try:
            yield pg_url_for(name)
        finally:
            self.drop(name)

    def drop(self, name: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        self.drop(self.template)
        self._admin.dispose()


def skip_without_postgres() -> None:
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable (set BILLKEEP_TEST_PG_URL)")
