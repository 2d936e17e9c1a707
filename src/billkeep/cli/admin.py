"""Administrative commands: `migrate` and `tenants ...`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from billkeep.domain.clock import SystemClock, ms_to_rfc3339
from billkeep.domain.errors import BillkeepError
from billkeep.engine.tenants import TenantStore
from billkeep.storage.database import Database, database_url_from_env
from billkeep.storage.migrate import current_revision, upgrade_to_head

__all__ = ["register"]

tenants_app = typer.Typer(help="Tenants and their API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of a tenant.", no_args_is_help=True)
tenants_app.add_typer(keys_app, name="keys")

DatabaseOption = typer.Option(
    None, "--database-url", envvar="BILLKEEP_DATABASE_URL", help="Database URL."
)


def _fail(message: str) -> None:
    typer.echo(f"billkeep: error: {message}", err=True)
    raise typer.Exit(1)


def _store(url: str | None) -> TenantStore:
    db = Database(url or database_url_from_env())
    upgrade_to_head(db)
    return TenantStore(db)


def migrate(database_url: str | None = DatabaseOption) -> None:
    """Upgrade the database schema to the latest version."""
    db = Database(database_url or database_url_from_env())
    try:
        upgrade_to_head(db)
    except Exception as exc:
        _fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    typer.echo(f"database at revision {current_revision(db)}")


@tenants_app.command("create")
def tenants_create(name: str, database_url: str | None = DatabaseOption) -> None:
    """Create a tenant; its API key is printed once, alone on the last line."""
    try:
        tenant_id, key = _store(database_url).create_tenant(name, SystemClock().now_ms())
    except BillkeepError as exc:
        _fail(f"{exc.code}: {exc.detail}")
    typer.echo(f"tenant {tenant_id} created; its API key (shown once) follows")
    typer.echo(key)


@tenants_app.command("list")
def tenants_list(database_url: str | None = DatabaseOption) -> None:
    """List tenants."""
    table = Table("tenant", "name", "created")
    for tenant_id, name, created_ms in _store(database_url).list_tenants():
        table.add_row(tenant_id, name, ms_to_rfc3339(created_ms))
    Console().print(table)


@keys_app.command("list")
def keys_list(tenant_id: str, database_url: str | None = DatabaseOption) -> None:
    """List a tenant's keys by prefix (the keys themselves are not stored)."""
    try:
        keys = _store(database_url).list_keys(tenant_id)
    except BillkeepError as exc:
        _fail(f"{exc.code}: {exc.detail}")
    table = Table("key id", "prefix", "created", "revoked")
    for info in keys:
        table.add_row(
            info.id,
            info.prefix + "...",
            ms_to_rfc3339(info.created_at_ms),
            ms_to_rfc3339(info.revoked_at_ms) or "",
        )
    Console().print(table)


@keys_app.command("create")
def keys_create(tenant_id: str, database_url: str | None = DatabaseOption) -> None:
    """Create another key for a tenant (printed once, alone on the last line)."""
    try:
        key = _store(database_url).create_key(tenant_id, SystemClock().now_ms())
    except BillkeepError as exc:
        _fail(f"{exc.code}: {exc.detail}")
    typer.echo(f"new API key for {tenant_id} (shown once) follows")
    typer.echo(key)


@keys_app.command("revoke")
def keys_revoke(tenant_id: str, key_id: str, database_url: str | None = DatabaseOption) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    if not _store(database_url).revoke_key(tenant_id, key_id, SystemClock().now_ms()):
        _fail(f"no active key {key_id} for tenant {tenant_id}")
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
    app.add_typer(tenants_app, name="tenants")
