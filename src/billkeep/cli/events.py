"""`billkeep events list|show|replay|process`: the webhook inbox and each event's outcome."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from billkeep.domain.errors import BillkeepError
from billkeep.engine.service import Billkeep

__all__ = ["register"]

events_app = typer.Typer(help="Webhook events received from gateways.", no_args_is_help=True)
DatabaseOption = typer.Option(None, "--database-url", envvar="BILLKEEP_DATABASE_URL")
TenantOption = typer.Option(..., "--tenant", help="Tenant id.")


def _open(database_url: str | None) -> Billkeep:
    from billkeep.runtime import open_billkeep

    return open_billkeep(database_url)


def _fail(message: str) -> None:
    typer.echo(f"billkeep: error: {message}", err=True)
    raise typer.Exit(1)


@events_app.command("list")
def events_list(
    tenant: str = TenantOption,
    gateway: str | None = typer.Option(None, "--gateway"),
    outcome: str | None = typer.Option(None, "--outcome"),
    limit: int = typer.Option(20, "--limit"),
    as_json: bool = typer.Option(False, "--json"),
    database_url: str | None = DatabaseOption,
) -> None:
    """Inbox events, newest first."""
    from billkeep.webhooks.queries import list_events

    bk = _open(database_url)
    try:
        page = list_events(bk.db, tenant, gateway_id=gateway, outcome=outcome, limit=limit)
    except BillkeepError as exc:
        _fail(exc.detail)
        return
    if as_json:
        typer.echo(json.dumps(page.as_dict(), indent=2))
        return
    table = Table("id", "event", "type", "reference", "outcome", "reason")
    for e in page.data:
        table.add_row(
            e["id"], e["event_id"], e["type"], e["reference"] or "", e["outcome"], e["reason"] or ""
        )
    Console().print(table)


@events_app.command("show")
def events_show(
    event_row_id: str, tenant: str = TenantOption, database_url: str | None = DatabaseOption
) -> None:
    """One event with its payload and outcome."""
    from billkeep.webhooks.queries import get_event

    bk = _open(database_url)
    try:
        typer.echo(json.dumps(get_event(bk.db, tenant, event_row_id), indent=2))
    except BillkeepError as exc:
        _fail(exc.detail)


@events_app.command("replay")
def events_replay(
    event_row_id: str, tenant: str = TenantOption, database_url: str | None = DatabaseOption
) -> None:
    """Process an event again (safe: effects are idempotent and never move anything backward)."""
    from billkeep.reconciliation.wiring import webhook_service_for

    bk = _open(database_url)
    try:
        outcome = webhook_service_for(bk).processor.process_event(tenant, event_row_id, force=True)
    except BillkeepError as exc:
        _fail(exc.detail)
        return
    typer.echo(outcome.value)


@events_app.command("process")
def events_process(database_url: str | None = DatabaseOption) -> None:
    """Process every received or parked event that is due now (all tenants)."""
    from billkeep.reconciliation.wiring import webhook_service_for

    bk = _open(database_url)
    typer.echo(f"processed {webhook_service_for(bk).processor.drain()} events")


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
