"""Digests that prove a seed reproduces: a hash of the trace and of a canonical dump of the data.

Ids and timestamps need no normalising: inside a simulation ids come from the seeded source
(`billkeep.domain.ids.set_random_source`) and times from the simulated clock, so the same seed
writes byte-identical rows. API keys are left out (they are random secrets by design, and their
hashes are all that is stored).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from billkeep.gateways.simulator import SimulatorCore
from billkeep.storage.database import Database
from billkeep.storage.tables.core import (
    accounts,
    charge_attempts,
    charges,
    command_transitions,
    commands,
    customers,
    idempotency_keys,
    journal_entries,
    postings,
    refunds,
    tenants,
)

__all__ = ["DIGEST_TABLES", "database_digest", "gateway_digest", "trace_digest"]

DIGEST_TABLES: tuple[sa.Table, ...] = (
    tenants,
    customers,
    commands,
    command_transitions,
    idempotency_keys,
    charges,
    charge_attempts,
    refunds,
    accounts,
    journal_entries,
    postings,
)
SHORT_DIGEST_CHARS = 16


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, int | str):
        return value
    return str(value)


def _hash_lines(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:SHORT_DIGEST_CHARS]


def trace_digest(trace: list[str]) -> str:
    return _hash_lines(trace)


def database_digest(db: Database) -> str:
    def lines() -> Iterable[str]:
        with db.read() as conn:
            for table in DIGEST_TABLES:
                query = sa.select(table).order_by(*table.primary_key.columns)
                for row in conn.execute(query):
                    values = [_scalar(v) for v in row]
                    yield json.dumps([table.name, values], separators=(",", ":"))

    return _hash_lines(lines())


def gateway_digest(core: SimulatorCore) -> str:
    with core.store.read() as tx:
        rows = tx.conn.execute(
            "SELECT seq, id, kind, status, obj FROM objects ORDER BY seq"
        ).fetchall()
    return _hash_lines(json.dumps([_scalar(v) for v in row], separators=(",", ":")) for row in rows)
