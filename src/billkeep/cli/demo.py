"""`billkeep demo`: the main job, on a fresh embedded SQLite database."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from billkeep.demo.charges_act import ChargeBurst, run_charge_burst
from billkeep.demo.render import render_charge_report
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.gateways.fake import FakeGateway, RandomFaults
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head

__all__ = ["register"]

# The demo compresses time: unknown outcomes are re-asked after 100 ms instead of 1 minute.
DEMO_CONFIG = EngineConfig(
    lease_ms=2_000, resolve_backoff_ms=(100, 200, 400), error_retry_ms=100, wait_poll_ms=20
)


def _fresh_sqlite(path: Path) -> str:
    for suffix in ("", "-wal", "-shm", ".fake-gateway", ".fake-gateway-wal", ".fake-gateway-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def demo(
    database: Path = typer.Option(
        Path("billkeep-demo.db"), help="SQLite file, recreated on each run."
    ),
    intents: int = typer.Option(200, min=1, max=100_000, help="Charge intents to submit."),
    threads: int = typer.Option(8, min=1, max=64, help="Client threads."),
    fault_probability: float = typer.Option(0.25, min=0.0, max=1.0, help="Per gateway call."),
    seed: int = typer.Option(7, help="Seed of the workload and of the faults."),
) -> None:
    """Fire a burst of duplicate, concurrent charges under gateway faults; prove exactly-once."""
    logging.basicConfig(level=logging.ERROR)
    console = Console()
    url = _fresh_sqlite(database)
    db = Database(url)
    upgrade_to_head(db)
    faults = RandomFaults(seed=seed, probability=fault_probability)
    gateway = FakeGateway(f"{database}.fake-gateway", faults=faults)
    bk = Billkeep(db, StaticGatewayDirectory(gateway), config=DEMO_CONFIG)
    tenant_id, _key = bk.tenants.create_tenant("demo", bk.clock.now_ms())
    console.print(
        f"[bold]billkeep demo[/] on {url}: {intents} intents, {threads} threads, faults p={fault_probability}"
    )

    def settle_async() -> None:
        import sqlite3

        with sqlite3.connect(f"{database}.fake-gateway") as conn:
            pending = [
                r[0] for r in conn.execute("SELECT id FROM payments WHERE status = 'processing'")
            ]
        for reference in pending:
            gateway.settle(reference)

    def disable_faults() -> None:
        faults.enabled = False

    plan = ChargeBurst(intents=intents, threads=threads, seed=seed)
    with Progress(console=console) as progress:
        task = progress.add_task("submitting charges", total=None)
        report = run_charge_burst(
            bk,
            tenant_id,
            plan,
            disable_faults=disable_faults,
            settle_async=settle_async,
            succeeded_by_command=gateway.succeeded_by_command,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    ok = render_charge_report(console, report)
    bk.close()
    if not ok:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
