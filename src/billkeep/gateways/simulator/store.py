"""The simulator's own SQLite store: every Stripe object as JSON plus the columns queries need.

One connection per thread (SQLite connections are not shareable across concurrent threads), WAL so
readers never block the writer, `busy_timeout` so writers queue instead of failing, and every
write inside `BEGIN IMMEDIATE`: the write lock is taken up front, so two requests can never both
read "no refund yet" and both refund (the classic deferred-transaction upgrade race).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from billkeep.gateways.simulator.errors import JsonObject
from billkeep.gateways.simulator.limits import SQLITE_BUSY_TIMEOUT_MS

__all__ = ["IdempotencyRecord", "ListWindow", "SimStore", "StoredObject", "Tx"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sequence (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT OR IGNORE INTO sequence (id, value) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  seq INTEGER NOT NULL UNIQUE,
  created_s INTEGER NOT NULL,
  ref TEXT,
  status TEXT,
  type TEXT,
  settle_at_ms INTEGER,
  obj TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_kind_seq ON objects (kind, seq);
CREATE INDEX IF NOT EXISTS objects_kind_created ON objects (kind, created_s);
CREATE INDEX IF NOT EXISTS objects_ref ON objects (ref, kind);
CREATE INDEX IF NOT EXISTS objects_settle ON objects (settle_at_ms) WHERE settle_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS object_metadata (
  object_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (object_id, key)
);
CREATE INDEX IF NOT EXISTS object_metadata_kv ON object_metadata (key, value);
CREATE TABLE IF NOT EXISTS idempotency_keys (
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  status_code INTEGER NOT NULL,
  body TEXT NOT NULL,
  CONSTRAINT idempotency_key_unique UNIQUE (key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency_keys (created_ms);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL UNIQUE,
  url TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL,
  delay_decided INTEGER NOT NULL DEFAULT 0,
  last_status_code INTEGER,
  last_error TEXT,
  delivered_ms INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON webhook_deliveries (status, next_attempt_ms);
CREATE TABLE IF NOT EXISTS webhook_attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  delivery_id INTEGER NOT NULL,
  event_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  at_ms INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  status_code INTEGER,
  error TEXT
);
"""


@dataclass(frozen=True, slots=True)
class StoredObject:
    id: str
    kind: str
    seq: int
    created_s: int
    ref: str | None
    status: str | None
    type: str | None
    settle_at_ms: int | None
    obj: JsonObject


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: str
    fingerprint: str
    created_ms: int
    status_code: int
    body: JsonObject


@dataclass(frozen=True, slots=True)
class ListWindow:
    """Which slice of a kind to list, newest first (as Stripe lists)."""

    limit: int
    gte_s: int | None = None
    lt_s: int | None = None
    after_seq: int | None = None  # starting_after: older than this one
    before_seq: int | None = None  # ending_before: newer than this one


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _row_to_object(row: sqlite3.Row) -> StoredObject:
    return StoredObject(
        id=row["id"],
        kind=row["kind"],
        seq=row["seq"],
        created_s=row["created_s"],
        ref=row["ref"],
        status=row["status"],
        type=row["type"],
        settle_at_ms=row["settle_at_ms"],
        obj=json.loads(row["obj"]),
    )


class Tx:
    """One open transaction; every store operation goes through it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- sequence and meta -------------------------------------------------------------------
    def next_seq(self) -> int:
        row = self.conn.execute(
            "UPDATE sequence SET value = value + 1 WHERE id = 1 RETURNING value"
        ).fetchone()
        return int(row[0])

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- objects -------------------------------------------------------------------------------
    def insert_object(self, item: StoredObject) -> None:
        self.conn.execute(
            "INSERT INTO objects (id, kind, seq, created_s, ref, status, type, settle_at_ms, obj) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item.id,
                item.kind,
                item.seq,
                item.created_s,
                item.ref,
                item.status,
                item.type,
                item.settle_at_ms,
                _dumps(item.obj),
            ),
        )
        metadata = item.obj.get("metadata")
        if isinstance(metadata, dict) and metadata:
            self.replace_metadata(item.id, metadata)

    def update_object(
        self,
        object_id: str,
        obj: JsonObject,
        *,
        status: str | None,
        settle_at_ms: int | None = None,
    ) -> None:
        self.conn.execute(
            "UPDATE objects SET obj = ?, status = ?, settle_at_ms = ? WHERE id = ?",
            (_dumps(obj), status, settle_at_ms, object_id),
        )

    def replace_metadata(self, object_id: str, metadata: dict[str, str]) -> None:
        self.conn.execute("DELETE FROM object_metadata WHERE object_id = ?", (object_id,))
        self.conn.executemany(
            "INSERT INTO object_metadata (object_id, key, value) VALUES (?, ?, ?)",
            [(object_id, key, value) for key, value in metadata.items()],
        )

    def get_object(self, kind: str, object_id: str) -> StoredObject | None:
        row = self.conn.execute(
            "SELECT * FROM objects WHERE id = ? AND kind = ?", (object_id, kind)
        ).fetchone()
        return None if row is None else _row_to_object(row)

    def children(self, kind: str, ref: str) -> list[StoredObject]:
        rows = self.conn.execute(
            "SELECT * FROM objects WHERE ref = ? AND kind = ? ORDER BY seq", (ref, kind)
        ).fetchall()
        return [_row_to_object(row) for row in rows]

    def list_objects(
        self,
        kind: str,
        window: ListWindow,
        *,
        filters: Sequence[tuple[str, str]] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[StoredObject], bool]:
        """A page (newest first) and whether more remain beyond it in the listing direction."""
        clauses = ["kind = ?"]
        args: list[Any] = [kind]
        for column, value in filters:
            assert column in ("ref", "status", "type"), "filter columns are fixed"
            clauses.append(f"{column} = ?")
            args.append(value)
        for key, value in metadata:
            clauses.append(
                "EXISTS (SELECT 1 FROM object_metadata m "
                "WHERE m.object_id = objects.id AND m.key = ? AND m.value = ?)"
            )
            args.extend((key, value))
        if window.gte_s is not None:
            clauses.append("created_s >= ?")
            args.append(window.gte_s)
        if window.lt_s is not None:
            clauses.append("created_s < ?")
            args.append(window.lt_s)
        ascending = window.before_seq is not None and window.after_seq is None
        if window.after_seq is not None:
            clauses.append("seq < ?")
            args.append(window.after_seq)
        if window.before_seq is not None:
            clauses.append("seq > ?")
            args.append(window.before_seq)
        order = "ASC" if ascending else "DESC"
        sql = f"SELECT * FROM objects WHERE {' AND '.join(clauses)} ORDER BY seq {order} LIMIT ?"
        rows = self.conn.execute(sql, [*args, window.limit + 1]).fetchall()
        items = [_row_to_object(row) for row in rows[: window.limit]]
        if ascending:
            items.reverse()
        return items, len(rows) > window.limit

    def due_for_settlement(self, now_ms: int, limit: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT id FROM objects WHERE settle_at_ms IS NOT NULL AND settle_at_ms <= ? "
            "ORDER BY settle_at_ms, seq LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        return [str(row[0]) for row in rows]

    # -- idempotency ---------------------------------------------------------------------------
    def get_idempotency(self, key: str) -> IdempotencyRecord | None:
        row = self.conn.execute("SELECT * FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return IdempotencyRecord(
            row["key"],
            row["fingerprint"],
            row["created_ms"],
            row["status_code"],
            json.loads(row["body"]),
        )

    def insert_idempotency(self, record: IdempotencyRecord) -> None:
        # The UNIQUE constraint is the guarantee; the in-memory in-flight check only turns the
        # concurrent case into a polite 409 instead of a constraint failure.
        self.conn.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, created_ms, status_code, body) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                record.key,
                record.fingerprint,
                record.created_ms,
                record.status_code,
                _dumps(record.body),
            ),
        )

    def purge_idempotency(self, older_than_ms: int) -> int:
        cursor = self.conn.execute(
            "DELETE FROM idempotency_keys WHERE created_ms < ?", (older_than_ms,)
        )
        return cursor.rowcount

    # -- webhooks ------------------------------------------------------------------------------
    def enqueue_delivery(self, event_id: str, url: str, next_attempt_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO webhook_deliveries (event_id, url, status, next_attempt_ms) "
            "VALUES (?, ?, 'pending', ?)",
            (event_id, url, next_attempt_ms),
        )

    def pending_deliveries(self, due_before_ms: int | None, limit: int) -> list[sqlite3.Row]:
        if due_before_ms is None:
            sql = "SELECT * FROM webhook_deliveries WHERE status = 'pending' ORDER BY id LIMIT ?"
            return self.conn.execute(sql, (limit,)).fetchall()
        sql = (
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_ms <= ? "
            "ORDER BY id LIMIT ?"
        )
        return self.conn.execute(sql, (due_before_ms, limit)).fetchall()

    def postpone_delivery(self, delivery_id: int, next_attempt_ms: int) -> None:
        self.conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_ms = ?, delay_decided = 1 WHERE id = ?",
            (next_attempt_ms, delivery_id),
        )

    def finish_attempt(
        self,
        delivery_id: int,
        *,
        status: str,
        attempts: int,
        next_attempt_ms: int,
        status_code: int | None,
        error: str | None,
        delivered_ms: int | None,
    ) -> None:
        self.conn.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_ms = ?, "
            "delay_decided = 1, last_status_code = ?, last_error = ?, "
            "delivered_ms = COALESCE(delivered_ms, ?) WHERE id = ?",
            (status, attempts, next_attempt_ms, status_code, error, delivered_ms, delivery_id),
        )

    def log_attempt(
        self,
        delivery_id: int,
        event_id: str,
        attempt: int,
        at_ms: int,
        outcome: str,
        status_code: int | None,
        error: str | None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO webhook_attempts "
            "(delivery_id, event_id, attempt, at_ms, outcome, status_code, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (delivery_id, event_id, attempt, at_ms, outcome, status_code, error),
        )

    def delivery_log(self, limit: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT d.id AS delivery_id, d.event_id, d.url, d.status, d.attempts, "
            "d.next_attempt_ms, d.last_status_code, d.last_error, d.delivered_ms, "
            "o.type AS event_type FROM webhook_deliveries d "
            "LEFT JOIN objects o ON o.id = d.event_id ORDER BY d.id DESC LIMIT ?",
            (limit,),
        ).fetchall()

    def attempts_for(self, delivery_ids: Sequence[int]) -> list[sqlite3.Row]:
        if not delivery_ids:
            return []
        marks = ",".join("?" for _ in delivery_ids)
        return self.conn.execute(
            f"SELECT * FROM webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY id",
            list(delivery_ids),
        ).fetchall()

    # -- state summary -------------------------------------------------------------------------
    def count_by(self, kind: str, column: str) -> dict[str, int]:
        assert column in ("status", "type"), "summary columns are fixed"
        rows = self.conn.execute(
            f"SELECT {column}, COUNT(*) FROM objects WHERE kind = ? GROUP BY {column}", (kind,)
        ).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def succeeded_by_metadata(self, kind: str, key: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT m.value, COUNT(*) FROM objects o JOIN object_metadata m "
            "ON m.object_id = o.id AND m.key = ? WHERE o.kind = ? AND o.status = 'succeeded' "
            "GROUP BY m.value",
            (key, kind),
        ).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def refunded_by_payment_intent(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT ref, SUM(json_extract(obj, '$.amount')) FROM objects "
            "WHERE kind = 'refund' AND status IN ('succeeded', 'pending') GROUP BY ref"
        ).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def delivery_counts(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status"
        ).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}


class SimStore:
    """Opens per-thread connections to one SQLite file and hands out transactions."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        # ":memory:" is one database per connection, so an in-memory store shares one connection
        # and serialises transactions on a lock instead.
        self._shared_lock: threading.RLock | None = (
            threading.RLock() if path == ":memory:" else None
        )
        self._shared: sqlite3.Connection | None = self._open() if path == ":memory:" else None
        # Every statement is idempotent (IF NOT EXISTS / OR IGNORE), so a restart re-runs it safely.
        self._connection().executescript(_SCHEMA)

    @property
    def path(self) -> str:
        return self._path

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed payment survives a power cut, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Tx]:
        if self._shared_lock is not None:
            self._shared_lock.acquire()
        try:
            conn = self._connection()
            conn.execute(begin)
            try:
                yield Tx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if self._shared_lock is not None:
                self._shared_lock.release()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction holding SQLite's write lock from its first statement."""
        with self._transaction("BEGIN IMMEDIATE") as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction: one consistent snapshot across several queries."""
        with self._transaction("BEGIN") as tx:
            yield tx

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
