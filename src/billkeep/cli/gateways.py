"""`billkeep gateways create|list`: a tenant's payment gateways. Secrets go in, never out.

Secrets may come from the environment (BILLKEEP_GATEWAY_API_KEY, BILLKEEP_GATEWAY_WEBHOOK_SECRET)
rather than the command line, where other users of the machine could read them.
"""

from __future__ import annotations

import json
import uuid

import typer

from billkeep.domain.errors import BillkeepError

__all__ = ["register"]

gateways_app = typer.Typer(help="Payment gateways of a tenant.", no_args_is_help=True)

DatabaseOption = typer.Option(
    None, "--database-url", envvar="BILLKEEP_DATABASE_URL", help="Database URL."
)
TenantOption = typer.Option(..., "--tenant", help="Tenant id (ten_...).")


def _fail(message: str) -> None:
    typer.echo(f"billkeep: error: {message}", err=True)
    raise typer.Exit(1)


@gateways_app.command("create")
def gateways_create(
    tenant: str = TenantOption,
    api_key: str = typer.Option(
        ..., "--api-key", envvar="BILLKEEP_GATEWAY_API_KEY", help="sk_... (write-only)."
    ),
    webhook_secret: str = typer.Option(
        ..., "--webhook-secret", envvar="BILLKEEP_GATEWAY_WEBHOOK_SECRET", help="whsec_..."
    ),
    api_base: str | None = typer.Option(None, "--api-base", help="Default https://api.stripe.com."),
    kind: str = typer.Option("stripe", "--kind"),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", help="Repeat a create safely (default: a new key)."
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """Configure a gateway for a tenant (it becomes the tenant's default); prints it as JSON."""
    from billkeep.runtime import open_billkeep

    request: dict[str, object] = {
        "kind": kind,
        "api_key": api_key,
        "webhook_secret": webhook_secret,
    }
    if api_base is not None:
        request["api_base"] = api_base
    billkeep = open_billkeep(database_url)
    try:
        if tenant not in {t[0] for t in billkeep.tenants.list_tenants()}:
            _fail(f"no tenant {tenant}")
        result = billkeep.execute(
            tenant,
            "gateway.create",
            request,
            idempotency_key=idempotency_key or f"cli-gateway-{uuid.uuid4()}",
        )
    except BillkeepError as exc:
        _fail(f"{exc.code}: {exc.detail}")
    finally:
        billkeep.close()
    if result.status != 201:
        _fail(f"gateway not created ({result.status}): {result.body_text}")
    typer.echo(result.body_text)


@gateways_app.command("list")
def gateways_list(tenant: str = TenantOption, database_url: str | None = DatabaseOption) -> None:
    """List a tenant's gateways as JSON lines (no secrets)."""
    from billkeep.runtime import enable_gateway_configs, open_billkeep

    billkeep = open_billkeep(database_url)
    try:
        for gateway in enable_gateway_configs(billkeep).list(tenant):
            typer.echo(json.dumps(gateway, sort_keys=True))
    finally:
        billkeep.close()


def register(app: typer.Typer) -> None:
    app.add_typer(gateways_app, name="gateways")
