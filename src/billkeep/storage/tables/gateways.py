"""Tables of the gateways area: each tenant's configured payment gateways.

Secrets (API key, webhook signing secrets) are stored only encrypted (billkeep.gateways.crypto);
no query of this module ever returns them in clear.
"""

from __future__ import annotations

import sqlalchemy as sa

from billkeep.storage.tables.base import id_column, metadata, tenant_column, time_column

__all__ = ["MAX_API_BASE_LENGTH", "gateway_configs"]

MAX_API_BASE_LENGTH = 500
MAX_KIND_LENGTH = 32

gateway_configs = sa.Table(
    "gateway_configs",
    metadata,
    tenant_column(),
    id_column(),
    sa.Column("kind", sa.String(MAX_KIND_LENGTH), nullable=False),
    sa.Column("api_base", sa.String(MAX_API_BASE_LENGTH), nullable=False),
    sa.Column("api_key_encrypted", sa.Text(), nullable=False),
    # A JSON list of signing secrets, encrypted as one value: several are accepted while rotating.
    sa.Column("webhook_secrets_encrypted", sa.Text(), nullable=False),
    sa.Column("is_default", sa.Boolean(), nullable=False),
    sa.Column("command_id", sa.String(40), nullable=True),
    time_column("created_at_ms"),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)
# A webhook arrives at /v1/webhooks/{gateway_id} with no tenant in sight: found by id alone (ids
# are globally unique ULIDs; this index is not a uniqueness rule, the primary key stays tenant-led).
sa.Index("ix_gateway_configs_id", gateway_configs.c.id)
sa.Index("ix_gateway_configs_default", gateway_configs.c.tenant_id, gateway_configs.c.is_default)
