"""Connections and transactions for both engines, and the one retry wrapper.

SQLite (embedded default): WAL so readers never block the writer, a busy_timeout so writers queue
instead of failing, foreign keys on, and every write transaction opened with `BEGIN IMMEDIATE`
(taking the write lock up front avoids the deadlock-prone read-then-upgrade of a deferred BEGIN).

PostgreSQL (production): a pooled psycopg 3 engine at READ COMMITTED; code that must serialise
takes row locks explicitly (`FOR UPDATE`), and claims use `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from billkeep.domain.errors import DatabaseUnavailable

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MAX_TX_RETRIES",
    "Database",
    "database_url_from_env",
    "insert_ignoring_conflicts",
    "is_retryable",
    "is_unavailable",
]

DEFAULT_DATABASE_URL = "sqlite:///billkeep.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
MAX_TX_RETRIES = 8
TX_RETRY_BASE_DELAY_MS = 5
TX_RETRY_MAX_DELAY_MS = 500
PG_POOL_SIZE = 10
PG_POOL_OVERFLOW = 20
PG_CONNECT_TIMEOUT_S = 5

# 40001 serialization_failure, 40P01 deadlock_detected: the transaction did nothing; run it again.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# Connection-level failures: the server is gone or restarting.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P")

T = TypeVar("T")


def database_url_from_env() -> str:
    return os.environ.get("BILLKEEP_DATABASE_URL", DEFAULT_DATABASE_URL)


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_retryable(exc: BaseException) -> bool:
    """True for failures after which the whole transaction can safely run again."""
    if _sqlstate(exc) in _RETRYABLE_SQLSTATES:
        return True
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "database is locked" in message or "database is busy" in message
    return False


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    state = _sqlstate(exc)
    if state is not None and state.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
        return True
    if isinstance(exc, OperationalError):
        text = str(exc).lower()
        return any(
            marker in text
            for marker in (
                "connection refused",
                "could not connect",
                "server closed",
                "terminating",
            )
        )
    return False


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.info.get("billkeep_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One database, either engine. All access goes through `write()`/`read()` or `run_write`."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.engine = sa.create_engine(
                url, echo=echo, connect_args={"check_same_thread": False}
            )
            _configure_sqlite(self.engine)
        elif url.startswith("postgresql"):
            self.engine = sa.create_engine(
                url,
                echo=echo,
                pool_size=PG_POOL_SIZE,
                max_overflow=PG_POOL_OVERFLOW,
                pool_pre_ping=True,
                connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
            )
        else:
            raise ValueError(
                f"unsupported database URL {url!r}: use sqlite:/// or postgresql+psycopg://"
            )
        self.dialect = self.engine.dialect.name
        assert self.dialect in ("sqlite", "postgresql")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def _transaction(self, sqlite_begin: str) -> Iterator[Connection]:
        """A transaction that commits on success and rolls back on any exception; a lost or
        refused connection surfaces as DatabaseUnavailable (503 with Retry-After in the API)."""
        try:
            with self.engine.connect() as conn:
                conn.info["billkeep_begin"] = sqlite_begin
                with conn.begin():
                    yield conn
        except (OperationalError, DBAPIError) as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc
            raise

    def write(self) -> AbstractContextManager[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, the write lock taken up front)."""
        return self._transaction("IMMEDIATE")

    def read(self) -> AbstractContextManager[Connection]:
        """A read-only transaction (deferred on SQLite, so it takes no write lock)."""
        return self._transaction("DEFERRED")

    def run_write(self, work: Callable[[Connection], T], *, max_retries: int = MAX_TX_RETRIES) -> T:
        """Run `work` in a write transaction, again from scratch on serialization/deadlock/busy.

        `work` must have no effects outside the transaction: it may run several times.
        """
        assert max_retries >= 1
        for attempt in range(max_retries):
            try:
                with self.write() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if not is_retryable(exc) or attempt == max_retries - 1:
                    raise
                delay_ms = min(TX_RETRY_MAX_DELAY_MS, TX_RETRY_BASE_DELAY_MS * 2**attempt)
                time.sleep(random.uniform(0, delay_ms) / 1000)
        raise AssertionError("unreachable: the loop returns or raises")

    def run_read(self, work: Callable[[Connection], T]) -> T:
        with self.read() as conn:
            return work(conn)

    def ping(self) -> bool:
        try:
            with self.read() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def insert_ignoring_conflicts(db_dialect: str, table: sa.Table) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` for the given engine (set-based dedup)."""
    if db_dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()
