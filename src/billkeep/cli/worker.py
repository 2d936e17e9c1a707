"""`billkeep worker`: the recovery worker process (stops cleanly on SIGTERM/SIGINT)."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import typer

from billkeep.engine.service import Billkeep
from billkeep.engine.worker import RecoveryWorker

__all__ = ["register"]


def worker(
    database_url: str | None = typer.Option(None, "--database-url", envvar="BILLKEEP_DATABASE_URL"),
    once: bool = typer.Option(False, "--once", help="Drain what is claimable now, then exit."),
) -> None:
    """Resume abandoned and suspended commands and free expired idempotency keys."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from billkeep.runtime import open_billkeep  # the configured gateways (see billkeep.runtime)

    billkeep: Billkeep = open_billkeep(database_url)
    recovery = RecoveryWorker(billkeep)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        recovery.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from billkeep.billing.runs import run_billing_cycle, start_billing_thread
    from billkeep.reconciliation.wiring import webhook_service_for

    webhooks = webhook_service_for(billkeep)
    recovery.periodic_tasks.append(webhooks.processor.process_due)  # received and parked events
    if once:
        run_billing_cycle(billkeep, billkeep.clock.now_ms())  # invoice ended periods, charge due
        recovery.drain()
        recovery.sweep_keys()
        recovery.run_periodic_tasks()
    else:
        start_billing_thread(billkeep, recovery.stop_event)  # billing cycle every minute
        recovery.run_forever()
    typer.echo(f"worker stopped: {recovery.stats}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
