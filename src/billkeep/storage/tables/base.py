"""The shared MetaData and column helpers.

Conventions every table follows (they keep a move to Citus or CockroachDB open):
- `tenant_id` leads every primary key and every unique constraint; no cross-tenant transaction.
- ids are prefixed ULIDs (billkeep.domain.ids), so no central sequence is needed.
- times are integer epoch milliseconds (`*_ms`), identical on both engines.
- JSON is stored as canonical text, so a stored response replays byte for byte.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["ID_LENGTH", "TENANT_ID_LENGTH", "id_column", "metadata", "tenant_column", "time_column"]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# A prefixed ULID is at most 5 + 1 + 26 characters; leave room for longer prefixes.
ID_LENGTH = 40
TENANT_ID_LENGTH = 40


def tenant_column() -> sa.Column[str]:
    return sa.Column("tenant_id", sa.String(TENANT_ID_LENGTH), nullable=False)


def id_column(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, sa.String(ID_LENGTH), nullable=False)


def time_column(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)
