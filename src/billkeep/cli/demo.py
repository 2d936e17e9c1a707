"""`billkeep demo`: the main job, on a fresh embedded SQLite database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from billkeep.demo.billing_act import BillingActHooks, BillingQuarter, run_billing_quarter
from billkeep.demo.billing_render import render_billing_report
from billkeep.demo.charges_act import ChargeBurst, run_charge_burst
from billkeep.demo.reconcile_act import render_reconcile_report, run_reconcile_act
from billkeep.demo.render import render_charge_report
from billkeep.demo.resolutions import render_resolution_report, resolution_report
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.gateways.fake import FakeGateway, RandomFaults
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.gateways.simulator_process import run_simulator_process
from billkeep.gateways.stripe import StripeGateway, StripeTimeouts
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


# The simulator's faults: each failure mode on a share of payment calls; the answer of a
# timeout_after_commit is withheld longer than the client waits.
SIM_CLIENT_READ_TIMEOUT_MS = 1_000
SIM_HOLD_MS = 1_500
SIM_LATENCY_MS = 300
# The billing act keeps faults rarer: a held answer costs the client its read timeout.
BILLING_FAULT_PROBABILITY = 0.03


def _simulator_fault_plan(probability: float, seed: int) -> dict[str, object]:
    share = probability / 3
    match = {"method": "POST", "path": "/v1/payment_intents"}
    return {
        "seed": seed,
        "rules": [
            {"match": match, "fault": "timeout_after_commit", "probability": share,
             "hold_ms": SIM_HOLD_MS},
            {"match": match, "fault": "error_before_commit", "probability": share},
            {"match": match, "fault": "error_after_commit", "probability": share},
            {"match": match, "fault": "latency", "probability": probability,
             "latency_ms": SIM_LATENCY_MS},
        ],
    }  # fmt: skip


def _run_burst(
    console: Console,
    bk: Billkeep,
    tenant_id: str,
    plan: ChargeBurst,
    hooks: tuple[Callable[[], None], Callable[[], None], Callable[[], dict[str, int]]],
) -> bool:
    disable_faults, settle_async, succeeded_by_command = hooks
    with Progress(console=console) as progress:
        task = progress.add_task("submitting charges", total=None)
        report = run_charge_burst(
            bk,
            tenant_id,
            plan,
            disable_faults=disable_faults,
            settle_async=settle_async,
            succeeded_by_command=succeeded_by_command,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    ok = render_charge_report(console, report)
    resolved = render_resolution_report(console, resolution_report(bk, tenant_id))
    return ok and resolved


def _run_billing(
    console: Console, bk: Billkeep, quarter: BillingQuarter, hooks: BillingActHooks
) -> bool:
    """Act 2: a billed quarter on its own tenant, same database and gateway, a manual clock."""
    if quarter.subscriptions == 0:
        return True
    started = time.monotonic()
    console.print(
        f"[bold]billing act[/]: {quarter.subscriptions} subscriptions, {quarter.months} months"
    )
    with console.status("billing") as status:
        report = run_billing_quarter(
            bk.db.url, bk.services.gateways, quarter, hooks, on_step=status.update
        )
    ok = render_billing_report(console, report)
    console.print(f"billing act took {time.monotonic() - started:.1f} s")
    return ok


def _demo_with_simulator(
    console: Console,
    database: Path,
    plan: ChargeBurst,
    fault_probability: float,
    quarter: BillingQuarter,
) -> bool:
    """The burst against a real gateway simulator process (Stripe's protocol, over HTTP)."""
    sim_db = Path(f"{database}.sim.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sim_db}{suffix}").unlink(missing_ok=True)
    with run_simulator_process(
        sim_db, seed=plan.seed, extra_args=["--async-settle-ms", "0"]
    ) as sim:
        sim.set_faults(_simulator_fault_plan(fault_probability, plan.seed))
        gateway = StripeGateway(
            sim.api_key,
            api_base=sim.url,
            timeouts=StripeTimeouts(read_ms=SIM_CLIENT_READ_TIMEOUT_MS),
        )
        bk = Billkeep(Database(_fresh_sqlite(database)), StaticGatewayDirectory(gateway),
                      config=DEMO_CONFIG)  # fmt: skip
        upgrade_to_head(bk.db)
        tenant_id, _key = bk.tenants.create_tenant("demo", bk.clock.now_ms())
        console.print(f"gateway simulator process at {sim.url} (faults p={fault_probability})")

        def succeeded_by_command() -> dict[str, int]:
            return dict(sim.state()["payment_intents"]["succeeded_by_command"])

        def settle_async() -> None:
            sim.settle_all_processing()

        try:
            charges_ok = _run_burst(
                console, bk, tenant_id, plan, (sim.clear_faults, settle_async, succeeded_by_command)
            )
            hooks = BillingActHooks(
                lambda: sim.set_faults(_simulator_fault_plan(BILLING_FAULT_PROBABILITY, plan.seed)),
                sim.clear_faults,
                settle_async,
                succeeded_by_command,
            )
            billing_ok = _run_billing(console, bk, quarter, hooks)
            # Last act: reconcile the charges act's tenant, an outside payment injected first.
            reconciled = render_reconcile_report(console, run_reconcile_act(bk, tenant_id, sim))
            return charges_ok and billing_ok and reconciled
        finally:
            bk.close()
            gateway.close()


def demo(
    database: Path = typer.Option(
        Path("billkeep-demo.db"), help="SQLite file, recreated on each run."
    ),
    intents: int = typer.Option(200, min=1, max=100_000, help="Charge intents to submit."),
    threads: int = typer.Option(8, min=1, max=64, help="Client threads."),
    fault_probability: float = typer.Option(0.25, min=0.0, max=1.0, help="Per gateway call."),
    seed: int = typer.Option(7, help="Seed of the workload and of the faults."),
    billing_subscriptions: int = typer.Option(
        200, min=0, max=10_000, help="Subscriptions billed for a quarter in act 2 (0: skip it)."
    ),
    gateway_kind: str = typer.Option(
        "simulator",
        "--gateway",
        help="simulator: a real gateway simulator process over HTTP; fake: in-process.",
    ),
) -> None:
    """Fire a burst of duplicate, concurrent charges under gateway faults; prove exactly-once."""
    logging.basicConfig(level=logging.ERROR)
    console = Console()
    plan = ChargeBurst(intents=intents, threads=threads, seed=seed)
    quarter = BillingQuarter(subscriptions=billing_subscriptions, seed=seed)
    if gateway_kind == "simulator":
        console.print(
            f"[bold]billkeep demo[/]: {intents} intents, {threads} threads, via a gateway simulator"
        )
        if not _demo_with_simulator(console, database, plan, fault_probability, quarter):
            raise typer.Exit(2)
        return
    if gateway_kind != "fake":
        raise typer.BadParameter("--gateway must be simulator or fake")
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

    ok = _run_burst(
        console, bk, tenant_id, plan, (disable_faults, settle_async, gateway.succeeded_by_command)
    )
    hooks = BillingActHooks(
        lambda: setattr(faults, "enabled", True), disable_faults, settle_async,
        gateway.succeeded_by_command,
    )  # fmt: skip
    ok = _run_billing(console, bk, quarter, hooks) and ok
    bk.close()
    if not ok:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
