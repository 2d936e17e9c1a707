"""How a process (server, worker, CLI) builds its Billkeep from configuration.

The gateway directory decides which payment gateway each tenant uses. Until a tenant configures
one, the built-in default applies: BILLKEEP_DEFAULT_GATEWAY=fake (an in-process fake gateway whose
state lives in BILLKEEP_FAKE_GATEWAY_PATH, default beside the database).
"""

from __future__ import annotations

import os

from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database, database_url_from_env
from billkeep.storage.migrate import upgrade_to_head

__all__ = ["open_billkeep"]


def _fake_gateway_path(url: str) -> str:
    configured = os.environ.get("BILLKEEP_FAKE_GATEWAY_PATH")
    if configured:
        return configured
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") + ".fake-gateway"
    return ":memory:"


def open_billkeep(url: str | None = None, *, migrate: bool = True) -> Billkeep:
    database_url = url or database_url_from_env()
    db = Database(database_url)
    if migrate:
        upgrade_to_head(db)
    gateway = FakeGateway(_fake_gateway_path(database_url))
    return Billkeep(db, StaticGatewayDirectory(gateway))
