"""Per-tenant gateway configuration: the `gateway.create` operation and the config store.

Creating a gateway is a command like every POST (idempotent by the caller's key). Its secrets
must never be stored in clear, and the command's stored request is kept forever and shown by
`GET /v1/commands/{id}`. So `validate` replaces each secret by its AES-SIV seal (deterministic:
the same secret seals the same way, so a retry fingerprints the same and replays; a different
secret under the same key is 422 `idempotency_key_reused`). The stored request holds only sealed
values; the step unseals them and stores them Fernet-encrypted in `gateway_configs`. Nothing here
returns a secret: views carry id, kind, api_base and the webhook path only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.commands import CommandState
from billkeep.domain.errors import NotFound, ValidationFailed
from billkeep.domain.ids import new_id
from billkeep.engine.operations.validation import check_unknown_fields, gather, optional_string
from billkeep.engine.steps import Finish, LocalStep, Step, StepContext, Transition
from billkeep.gateways.crypto import SecretBox
from billkeep.gateways.stripe import DEFAULT_API_BASE
from billkeep.storage.database import Database
from billkeep.storage.tables.core import tenants
from billkeep.storage.tables.gateways import MAX_API_BASE_LENGTH, gateway_configs

__all__ = [
    "GATEWAY_KINDS",
    "CreateGateway",
    "GatewayConfigStore",
    "GatewayCredentials",
    "gateway_view",
    "webhook_url_path",
]

GATEWAY_KINDS = ("stripe",)
MAX_SECRET_LENGTH = 255
_API_KEY_PREFIXES = ("sk_", "rk_")  # Stripe secret and restricted keys
_WEBHOOK_SECRET_PREFIX = "whsec_"


def webhook_url_path(gateway_id: str) -> str:
    return f"/v1/webhooks/{gateway_id}"


def gateway_view(row: Any) -> dict[str, Any]:
    """The public shape of a gateway: never any secret."""
    return {
        "id": row.id,
        "object": "gateway",
        "kind": row.kind,
        "api_base": row.api_base,
        "webhook_url_path": webhook_url_path(row.id),
        "is_default": bool(row.is_default),
        "created_at": ms_to_rfc3339(row.created_at_ms),
    }


@dataclass(frozen=True, slots=True)
class GatewayCredentials:
    """A gateway's decrypted configuration: for building its client only, never for a response."""

    tenant_id: str
    gateway_id: str
    kind: str
    api_base: str
    api_key: str
    webhook_secrets: tuple[str, ...]

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return f"GatewayCredentials({self.tenant_id!r}, {self.gateway_id!r}, {self.kind!r})"


def _secret(request: Mapping[str, Any], field: str, prefixes: Sequence[str]) -> str:
    value = request.get(field)
    # Messages never echo the value: it is a secret.
    if not isinstance(value, str) or not value:
        raise ValidationFailed.single(field, "required, a non-empty string")
    if len(value) > MAX_SECRET_LENGTH or not value.isascii() or not value.isprintable():
        raise ValidationFailed.single(field, f"at most {MAX_SECRET_LENGTH} printable ASCII chars")
    if not value.startswith(tuple(prefixes)):
        raise ValidationFailed.single(field, f"must start with {' or '.join(prefixes)}")
    return value


def _api_base(request: Mapping[str, Any], allowed: Sequence[str] | None) -> str:
    value = optional_string(request, "api_base", MAX_API_BASE_LENGTH) or DEFAULT_API_BASE
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValidationFailed.single("api_base", "an http(s) URL without query or fragment")
    normalized = value.rstrip("/")
    if allowed is not None and not any(normalized.startswith(p.rstrip("/")) for p in allowed):
        # Without this list, a tenant could point the server at any host it can reach (SSRF).
        raise ValidationFailed.single("api_base", "not an allowed gateway address")
    return normalized


class CreateGateway:
    """`gateway.create`: one local phase recording an encrypted gateway config (the new default)."""

    name = "gateway.create"

    def __init__(self, box: SecretBox, allowed_api_bases: Sequence[str] | None = None) -> None:
        self._box = box
        self._allowed = None if allowed_api_bases is None else tuple(allowed_api_bases)

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        check_unknown_fields(request, {"kind", "api_key", "webhook_secret", "api_base"})
        checks: dict[str, Callable[[], Any]] = {
            "kind": lambda: _kind(request),
            "api_base": lambda: _api_base(request, self._allowed),
            "api_key": lambda: self._box.seal(_secret(request, "api_key", _API_KEY_PREFIXES)),
            "webhook_secret": lambda: self._box.seal(
                _secret(request, "webhook_secret", (_WEBHOOK_SECRET_PREFIX,))
            ),
        }
        return gather(checks)

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        return None

    def steps(self) -> Mapping[str, Step]:
        return {"started": LocalStep(self._create)}

    def _create(self, ctx: StepContext, conn: Connection) -> Transition:
        request, now_ms = ctx.request, ctx.now_ms()
        api_key = self._box.unseal(request["api_key"])
        webhook_secret = self._box.unseal(request["webhook_secret"])
        gateway_id = new_id("gw", now_ms)
        _lock_tenant(conn, ctx.tenant_id)  # one default per tenant, even with concurrent creates
        conn.execute(
            gateway_configs.update()
            .where(gateway_configs.c.tenant_id == ctx.tenant_id, gateway_configs.c.is_default)
            .values(is_default=False)
        )
        conn.execute(
            gateway_configs.insert().values(
                tenant_id=ctx.tenant_id,
                id=gateway_id,
                kind=request["kind"],
                api_base=request["api_base"],
                api_key_encrypted=self._box.encrypt(api_key),
                webhook_secrets_encrypted=self._box.encrypt(json.dumps([webhook_secret])),
                is_default=True,
                command_id=ctx.command_id,
                created_at_ms=now_ms,
            )
        )
        row = _load(conn, ctx.tenant_id, gateway_id)
        return Finish(
            CommandState.SUCCEEDED, 201, gateway_view(row), gateway_id, "gateway configured"
        )


def _kind(request: Mapping[str, Any]) -> str:
    kind = request.get("kind")
    if kind not in GATEWAY_KINDS:
        raise ValidationFailed.single("kind", f"one of {', '.join(GATEWAY_KINDS)}")
    return str(kind)


def _lock_tenant(conn: Connection, tenant_id: str) -> None:
    query = sa.select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    conn.execute(query).first()


def _load(conn: Connection, tenant_id: str, gateway_id: str) -> Any:
    return conn.execute(
        sa.select(gateway_configs).where(
            gateway_configs.c.tenant_id == tenant_id, gateway_configs.c.id == gateway_id
        )
    ).first()


class GatewayConfigStore:
    """Reads of gateway configs. Public reads return views; credentials are for gateway clients."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def list(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = self.db.run_read(
            lambda conn: conn.execute(
                sa.select(gateway_configs)
                .where(gateway_configs.c.tenant_id == tenant_id)
                .order_by(gateway_configs.c.id)
            ).all()
        )
        return [gateway_view(row) for row in rows]

    def get(self, tenant_id: str, gateway_id: str) -> dict[str, Any]:
        row = self.db.run_read(lambda conn: _load(conn, tenant_id, gateway_id))
        if row is None:
            raise NotFound(f"no gateway {gateway_id}")
        return gateway_view(row)

    def default_id(self, tenant_id: str, conn: Connection | None = None) -> str | None:
        def read(c: Connection) -> str | None:
            found = c.execute(
                sa.select(gateway_configs.c.id)
                .where(gateway_configs.c.tenant_id == tenant_id, gateway_configs.c.is_default)
                .order_by(gateway_configs.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            return None if found is None else str(found)

        return read(conn) if conn is not None else self.db.run_read(read)

    def credentials(self, tenant_id: str, gateway_id: str) -> GatewayCredentials:
        row = self.db.run_read(lambda conn: _load(conn, tenant_id, gateway_id))
        if row is None:
            raise NotFound(f"no gateway {gateway_id}")
        return self._credentials(row)

    def credentials_by_id(self, gateway_id: str) -> GatewayCredentials | None:
        """For an incoming webhook, which names only the gateway (ids are globally unique)."""
        row = self.db.run_read(
            lambda conn: conn.execute(
                sa.select(gateway_configs).where(gateway_configs.c.id == gateway_id).limit(1)
            ).first()
        )
        return None if row is None else self._credentials(row)

    def _credentials(self, row: Any) -> GatewayCredentials:
        secrets = json.loads(self.box.decrypt(row.webhook_secrets_encrypted))
        return GatewayCredentials(
            tenant_id=row.tenant_id,
            gateway_id=row.id,
            kind=row.kind,
            api_base=row.api_base,
            api_key=self.box.decrypt(row.api_key_encrypted),
            webhook_secrets=tuple(str(s) for s in secrets),
        )
