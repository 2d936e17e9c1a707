"""How a process (server, worker, CLI) builds its Billkeep from configuration.

The gateway directory decides which payment gateway each tenant uses: the tenant's default
configured gateway (`POST /v1/gateways`, `billkeep gateways create`), else the built-in default:
BILLKEEP_DEFAULT_GATEWAY=fake (an in-process fake gateway whose state lives in
BILLKEEP_FAKE_GATEWAY_PATH, default beside the database) or =stripe (BILLKEEP_STRIPE_API_KEY,
BILLKEEP_STRIPE_API_BASE).

Gateway secrets are encrypted with the server key (BILLKEEP_SECRET_KEY; see
billkeep.gateways.crypto): on PostgreSQL without it, `open_billkeep` refuses to start.
BILLKEEP_GATEWAY_API_BASES (comma-separated URL prefixes), when set, limits the addresses a tenant
may configure as a gateway's api_base. Engine limits come from the environment too
(EngineConfig.from_env: BILLKEEP_IDEMPOTENCY_TTL, BILLKEEP_LEASE, BILLKEEP_RESOLVE_BACKOFF, ...).
"""

from __future__ import annotations

import os
import threading
from weakref import WeakKeyDictionary

from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.gateways.config import CreateGateway, GatewayConfigStore
from billkeep.gateways.crypto import SecretBox, secret_box_for_database
from billkeep.gateways.directory import DatabaseGatewayDirectory
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import PaymentGateway
from billkeep.gateways.stripe import DEFAULT_API_BASE, StripeGateway
from billkeep.storage.database import Database, database_url_from_env
from billkeep.storage.migrate import upgrade_to_head

__all__ = ["default_gateway_from_env", "enable_gateway_configs", "open_billkeep"]


def _fake_gateway_path(url: str) -> str:
    configured = os.environ.get("BILLKEEP_FAKE_GATEWAY_PATH")
    if configured:
        return configured
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") + ".fake-gateway"
    return ":memory:"


def default_gateway_from_env(url: str) -> PaymentGateway:
    """The gateway of tenants that configured none (BILLKEEP_DEFAULT_GATEWAY, default `fake`)."""
    kind = os.environ.get("BILLKEEP_DEFAULT_GATEWAY", "fake")
    if kind == "fake":
        return FakeGateway(_fake_gateway_path(url))
    if kind == "stripe":
        api_key = os.environ.get("BILLKEEP_STRIPE_API_KEY")
        if not api_key:
            raise RuntimeError("BILLKEEP_DEFAULT_GATEWAY=stripe needs BILLKEEP_STRIPE_API_KEY")
        api_base = os.environ.get("BILLKEEP_STRIPE_API_BASE", DEFAULT_API_BASE)
        return StripeGateway(api_key, api_base=api_base)
    raise RuntimeError(f"unknown BILLKEEP_DEFAULT_GATEWAY {kind!r}: use fake or stripe")


def _allowed_api_bases() -> list[str] | None:
    configured = os.environ.get("BILLKEEP_GATEWAY_API_BASES", "")
    bases = [b.strip() for b in configured.split(",") if b.strip()]
    return bases or None


def open_billkeep(url: str | None = None, *, migrate: bool = True) -> Billkeep:
    database_url = url or database_url_from_env()
    # First: a server that could not read its gateways' secrets must not start at all.
    box = secret_box_for_database(database_url)
    db = Database(database_url)
    if migrate:
        upgrade_to_head(db)
    directory = DatabaseGatewayDirectory(
        GatewayConfigStore(db, box), default_gateway_from_env(database_url)
    )
    billkeep = Billkeep(db, directory, config=EngineConfig.from_env())
    enable_gateway_configs(billkeep, box, _allowed_api_bases())
    return billkeep


_enabled: WeakKeyDictionary[Billkeep, GatewayConfigStore] = WeakKeyDictionary()
_enabled_lock = threading.Lock()


def enable_gateway_configs(
    billkeep: Billkeep,
    box: SecretBox | None = None,
    allowed_api_bases: list[str] | None = None,
) -> GatewayConfigStore:
    """The config store of a Billkeep, registering `gateway.create` on it if it is missing.

    `open_billkeep` does this already; a Billkeep built another way (tests, embedding) gets the
    operation and a store over its database, keyed by the same server key.
    """
    with _enabled_lock:
        existing = _enabled.get(billkeep)
        if existing is not None:
            return existing
        directory = billkeep.services.gateways
        if isinstance(directory, DatabaseGatewayDirectory):
            store = directory.store
        else:
            store = GatewayConfigStore(billkeep.db, box or secret_box_for_database(billkeep.db.url))
        if CreateGateway.name not in billkeep.executor.operations:
            billkeep.register(CreateGateway(store.box, allowed_api_bases))
        _enabled[billkeep] = store
        return store
