"""`billkeep reconcile --tenant T --from A --to B [--gateway G] [--format table|json|csv]`."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from billkeep.domain.clock import rfc3339_to_ms
from billkeep.engine.service import Billkeep

__all__ = ["register"]

_CSV_FIELDS = (
    "id",
    "type",
    "gateway_reference",
    "resource_id",
    "expected",
    "actual",
    "healed",
    "resolution",
)


def _summary_table(run: dict[str, Any]) -> Table:
    summary = run["summary"]
    table = Table(title=f"reconciliation {run['id']} ({run['from']} .. {run['to']})")
    table.add_column("measure")
    table.add_column("count", justify="right")
    for name in ("gateway_records", "ledger_records", "matched", "healed"):
        table.add_row(name, str(summary[name]))
    for kind, count in summary["breaks"].items():
        table.add_row(f"break: {kind}", str(count), style="red" if count else None)
    return table


def reconcile(
    tenant: str = typer.Option(..., "--tenant", help="Tenant id."),
    start: str = typer.Option(..., "--from", help="Window start, RFC 3339."),
    end: str = typer.Option(..., "--to", help="Window end (exclusive), RFC 3339."),
    gateway: str | None = typer.Option(
        None, "--gateway", help="Gateway id (default: the tenant's)."
    ),
    output: str = typer.Option("table", "--format", help="table, json or csv (breaks)."),
    database_url: str | None = typer.Option(None, "--database-url", envvar="BILLKEEP_DATABASE_URL"),
) -> None:
    """Compare the gateway's records with the ledger, heal what is safe, report the rest."""
    from billkeep.reconciliation.runner import ReconciliationRunner
    from billkeep.reconciliation.sources import StripeSourceFactory
    from billkeep.reconciliation.views import all_breaks, get_run
    from billkeep.runtime import enable_gateway_configs, open_billkeep

    if output not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    try:
        from_ms, to_ms = rfc3339_to_ms(start), rfc3339_to_ms(end)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if to_ms <= from_ms:
        raise typer.BadParameter("--to must be after --from")
    bk: Billkeep = open_billkeep(database_url)
    gateway_id = gateway or bk.services.gateways.default_gateway_id(tenant)
    if not gateway_id.startswith("gw_"):
        typer.echo(
            f"billkeep: error: tenant {tenant} has no configured gateway to reconcile with (it uses"
            f" the built-in {gateway_id!r} gateway); configure one with `billkeep gateways create`",
            err=True,
        )
        raise typer.Exit(1)
    source = StripeSourceFactory(enable_gateway_configs(bk))(tenant, gateway_id)
    runner = ReconciliationRunner(bk.db, bk.clock)
    run_id = bk.db.run_write(
        lambda conn: runner.create_run(conn, tenant, gateway_id, from_ms, to_ms)
    )
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as progress:
        task = progress.add_task("starting", total=None)

        def report(phase: str, done: int) -> None:
            progress.update(task, description=f"{phase}: {done}")

        runner.run(tenant, run_id, source, report)
    run = get_run(bk.db, tenant, run_id)
    if output == "table":
        Console().print(_summary_table(run))
    elif output == "json":
        run["breaks"] = list(all_breaks(bk.db, tenant, run_id))
        typer.echo(json.dumps(run, indent=2))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for item in all_breaks(bk.db, tenant, run_id):
            writer.writerow(
                {
                    **item,
                    "expected": json.dumps(item["expected"]),
                    "actual": json.dumps(item["actual"]),
                }
            )


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile)
