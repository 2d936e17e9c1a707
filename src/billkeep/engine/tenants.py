"""Tenants and their API keys. A key is shown once; only its SHA-256 is stored.

Key format: `bk_<tenant_id>_<secret>`. Embedding the tenant id lets authentication look the hash
up by (tenant_id, key_hash), keeping tenant_id at the front of every index.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.errors import NotFound, ValidationFailed
from billkeep.domain.ids import new_id
from billkeep.storage.database import Database
from billkeep.storage.tables.core import api_keys, tenants

__all__ = ["ApiKeyInfo", "TenantStore", "hash_api_key"]

KEY_SECRET_BYTES = 24
KEY_DISPLAY_SECRET_CHARS = 6  # of the secret, shown in listings to tell keys apart
MAX_TENANT_NAME_LENGTH = 200
MAX_API_KEY_LENGTH = 200


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    tenant_id: str
    prefix: str
    created_at_ms: int
    revoked_at_ms: int | None


class TenantStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_tenant(self, name: str, now_ms: int) -> tuple[str, str]:
        """Create a tenant and its first API key; returns (tenant_id, key). The key is not stored."""
        if not name.strip() or len(name) > MAX_TENANT_NAME_LENGTH:
            raise ValidationFailed.single("name", f"1..{MAX_TENANT_NAME_LENGTH} characters")
        tenant_id = new_id("ten", now_ms)

        def work(conn: Connection) -> str:
            conn.execute(
                tenants.insert().values(tenant_id=tenant_id, name=name, created_at_ms=now_ms)
            )
            return self._insert_key(conn, tenant_id, now_ms)

        return tenant_id, self.db.run_write(work)

    def create_key(self, tenant_id: str, now_ms: int) -> str:
        def work(conn: Connection) -> str:
            self._require_tenant(conn, tenant_id)
            return self._insert_key(conn, tenant_id, now_ms)

        return self.db.run_write(work)

    def _require_tenant(self, conn: Connection, tenant_id: str) -> None:
        found = conn.execute(
            sa.select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant_id)
        ).first()
        if found is None:
            raise NotFound(f"no tenant {tenant_id}")

    def _insert_key(self, conn: Connection, tenant_id: str, now_ms: int) -> str:
        key = f"bk_{tenant_id}_{secrets.token_hex(KEY_SECRET_BYTES)}"
        conn.execute(
            api_keys.insert().values(
                tenant_id=tenant_id,
                id=new_id("key", now_ms),
                prefix=key[: len(f"bk_{tenant_id}_") + KEY_DISPLAY_SECRET_CHARS],
                key_hash=hash_api_key(key),
                created_at_ms=now_ms,
                revoked_at_ms=None,
            )
        )
        return key

    def list_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        def work(conn: Connection) -> list[ApiKeyInfo]:
            self._require_tenant(conn, tenant_id)
            rows = conn.execute(
                sa.select(api_keys).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.id)
            ).all()
            return [
                ApiKeyInfo(r.id, r.tenant_id, r.prefix, r.created_at_ms, r.revoked_at_ms)
                for r in rows
            ]

        return self.db.run_read(work)

    def revoke_key(self, tenant_id: str, key_id: str, now_ms: int) -> bool:
        def work(conn: Connection) -> bool:
            changed = conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.tenant_id == tenant_id,
                    api_keys.c.id == key_id,
                    api_keys.c.revoked_at_ms.is_(None),
                )
                .values(revoked_at_ms=now_ms)
            ).rowcount
            return bool(changed)

        return self.db.run_write(work)

    def list_tenants(self) -> list[tuple[str, str, int]]:
        rows = self.db.run_read(
            lambda c: c.execute(sa.select(tenants).order_by(tenants.c.tenant_id)).all()
        )
        return [(r.tenant_id, r.name, r.created_at_ms) for r in rows]

    def authenticate(self, key: str | None) -> str | None:
        """The tenant id the key belongs to, or None (unknown, malformed or revoked)."""
        if not key or len(key) > MAX_API_KEY_LENGTH or not key.startswith("bk_"):
            return None
        tenant_id, sep, _secret = key[3:].rpartition("_")
        if not sep or not tenant_id:
            return None
        digest = hash_api_key(key)
        row = self.db.run_read(
            lambda c: c.execute(
                sa.select(api_keys.c.key_hash, api_keys.c.revoked_at_ms).where(
                    api_keys.c.tenant_id == tenant_id, api_keys.c.key_hash == digest
                )
            ).first()
        )
        if row is None or row.revoked_at_ms is not None:
            return None
        return tenant_id if hmac.compare_digest(row.key_hash, digest) else None
