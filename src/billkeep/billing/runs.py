"""Billing runs: invoice every period ended by `as_of`, then charge what is due.

`run_billing_cycle(billkeep, as_of_ms)` is what the worker calls each round (all tenants), and what
`POST /v1/billing_runs` runs for one tenant inside its command. Runs may repeat and overlap on
many workers: batches are claimed with `FOR UPDATE SKIP LOCKED` and every effect is guarded by a
unique constraint or a conditional update, so a period is invoiced once and an attempt charged once
whatever runs when. Each loop is bounded (`max_rounds_per_run` batches).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.config import BillingConfig
from billkeep.billing.dunning import ChargeTally, collect_due_invoices
from billkeep.billing.invoicing import InvoicingTally, invoice_due_batch
from billkeep.billing.subscriptions import parse_time
from billkeep.billing.views import billing_run_view
from billkeep.domain.clock import Clock, ms_to_rfc3339
from billkeep.domain.commands import CommandState
from billkeep.domain.errors import FieldError, ValidationFailed
from billkeep.domain.ids import new_id
from billkeep.engine.executor import Executor
from billkeep.engine.operations.charges import CreateCharge
from billkeep.engine.problems import problem
from billkeep.engine.steps import (
    Advance,
    Finish,
    ForeignStep,
    LocalStep,
    Step,
    StepContext,
    Transition,
)
from billkeep.storage.database import Database
from billkeep.storage.tables.billing import billing_runs, invoices

if TYPE_CHECKING:
    from billkeep.engine.service import Billkeep

__all__ = [
    "BillingRunResult",
    "BillingWorkerHook",
    "CreateBillingRun",
    "run_billing",
    "run_billing_cycle",
    "start_billing_thread",
]

logger = logging.getLogger("billkeep.billing")

DEFAULT_BILLING_INTERVAL_MS = 60_000


@dataclass
class BillingRunResult:
    as_of_ms: int
    invoices_created: int = 0
    invoices_existing: int = 0
    subscriptions_failed: int = 0
    charges_attempted: int = 0
    charges_succeeded: int = 0
    charges_failed: int = 0
    charges_pending: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": ms_to_rfc3339(self.as_of_ms),
            "invoices_created": self.invoices_created,
            "invoices_existing": self.invoices_existing,
            "subscriptions_failed": self.subscriptions_failed,
            "charges_attempted": self.charges_attempted,
            "charges_succeeded": self.charges_succeeded,
            "charges_failed": self.charges_failed,
            "charges_pending": self.charges_pending,
        }


def _count_invoiced(db: Database, as_of_ms: int, tenant_id: str | None) -> int:
    query = (
        sa.select(sa.func.count()).select_from(invoices).where(invoices.c.period_end_ms <= as_of_ms)
    )
    if tenant_id is not None:
        query = query.where(invoices.c.tenant_id == tenant_id)
    return int(db.run_read(lambda conn: conn.execute(query).scalar_one()))


def run_billing(
    db: Database,
    executor: Executor,
    clock: Clock,
    as_of_ms: int,
    config: BillingConfig,
    *,
    tenant_id: str | None = None,
    run_id: str | None = None,
    actor: str | None = None,
) -> BillingRunResult:
    result = BillingRunResult(as_of_ms)
    invoicing = InvoicingTally()
    for _ in range(config.max_rounds_per_run):
        batch = invoice_due_batch(
            db, as_of_ms, clock.now_ms(), config, tenant_id=tenant_id, run_id=run_id
        )
        invoicing.add(batch)
        if batch.subscriptions == 0:
            break
    charging = ChargeTally()
    for _ in range(config.max_rounds_per_run):
        tally = collect_due_invoices(
            db, executor, clock.now_ms(), config, tenant_id=tenant_id, actor=actor
        )
        charging.add(tally)
        if tally.attempted == 0:
            break
    result.invoices_created = invoicing.created
    # Periods ended by as_of that already had their invoice before this run.
    result.invoices_existing = max(0, _count_invoiced(db, as_of_ms, tenant_id) - invoicing.created)
    result.subscriptions_failed = invoicing.failed
    result.charges_attempted = charging.attempted
    result.charges_succeeded = charging.succeeded
    result.charges_failed = charging.failed
    result.charges_pending = charging.pending
    return result


def run_billing_cycle(
    billkeep: Billkeep,
    as_of_ms: int,
    config: BillingConfig | None = None,
    *,
    tenant_id: str | None = None,
    actor: str | None = None,
) -> BillingRunResult:
    """Invoice every subscription period ending at or before `as_of_ms` (all tenants unless one is
    given), then attempt every invoice charge that is due by the Billkeep's clock. `actor` is
    recorded as who ran the charge commands (None: the executor's default)."""
    return run_billing(
        billkeep.db,
        billkeep.executor,
        billkeep.clock,
        as_of_ms,
        config or BillingConfig(),
        tenant_id=tenant_id,
        actor=actor,
    )


class BillingWorkerHook:
    """Called by the worker each round: a billing cycle as of now, at most every `interval_ms`."""

    def __init__(
        self,
        billkeep: Billkeep,
        config: BillingConfig | None = None,
        interval_ms: int = DEFAULT_BILLING_INTERVAL_MS,
        actor: str | None = None,
    ) -> None:
        self.billkeep = billkeep
        self.config = config or BillingConfig()
        self.interval_ms = interval_ms
        self.actor = actor
        self._last_ms: int | None = None

    def __call__(self) -> BillingRunResult | None:
        now_ms = self.billkeep.clock.now_ms()
        if self._last_ms is not None and now_ms - self._last_ms < self.interval_ms:
            return None
        self._last_ms = now_ms
        result = run_billing_cycle(self.billkeep, now_ms, self.config, actor=self.actor)
        if result.invoices_created or result.charges_attempted:
            logger.info("billing cycle: %s", result.as_dict())
        return result


def start_billing_thread(
    billkeep: Billkeep,
    stop_event: threading.Event,
    config: BillingConfig | None = None,
    interval_ms: int = DEFAULT_BILLING_INTERVAL_MS,
) -> threading.Thread:
    """Run a billing cycle as of now every `interval_ms` until `stop_event` is set (the worker's
    periodic job). Errors are logged and retried next round: every step is safe to repeat."""
    hook = BillingWorkerHook(billkeep, config, interval_ms)

    def loop() -> None:
        while not stop_event.is_set():
            try:
                hook()
            except Exception:
                logger.exception("billing cycle failed; retrying next round")
            stop_event.wait(min(interval_ms, 5_000) / 1000)

    thread = threading.Thread(target=loop, name="billing-cycle", daemon=True)
    thread.start()
    return thread


class CreateBillingRun:
    """billing_run.create: `started` records the run; `running` invoices and charges (many
    transactions of their own, all safe to repeat, so a crashed run simply runs again)."""

    name = "billing_run.create"

    def __init__(self, config: BillingConfig | None = None) -> None:
        self.config = config or BillingConfig()

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(request) - {"as_of"})
        if unknown:
            raise ValidationFailed([FieldError(k, "unknown field") for k in unknown])
        return {"as_of_ms": parse_time(request.get("as_of"), "as_of")}

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        return None

    def steps(self) -> Mapping[str, Step]:
        return {
            "started": LocalStep(self._record),
            "running": ForeignStep(self._run, self._finish),
        }

    def _record(self, ctx: StepContext, conn: Connection) -> Transition:
        now_ms, as_of_ms = ctx.now_ms(), ctx.request["as_of_ms"]
        if as_of_ms > now_ms:
            body = problem(
                "as_of_in_future",
                422,
                "as_of is in the future",
                "a billing run invoices periods that have ended; as_of must not be after now",
                [{"field": "as_of", "message": "must not be in the future"}],
            )
            return Finish(CommandState.REJECTED, 422, body, detail="as_of_in_future")
        run_id = new_id("run", now_ms)
        conn.execute(
            billing_runs.insert().values(
                tenant_id=ctx.tenant_id,
                id=run_id,
                as_of_ms=as_of_ms,
                status="running",
                invoices_created=0,
                invoices_existing=0,
                charges_attempted=0,
                charges_succeeded=0,
                charges_failed=0,
                charges_pending=0,
                command_id=ctx.command_id,
                created_at_ms=now_ms,
                completed_at_ms=None,
            )
        )
        return Advance("running", detail="run recorded", resource_id=run_id)

    def _run(self, ctx: StepContext) -> BillingRunResult:
        services = ctx.services
        executor = Executor(services, {CreateCharge.name: CreateCharge()})
        return run_billing(
            services.db,
            executor,
            services.clock,
            ctx.request["as_of_ms"],
            self.config,
            tenant_id=ctx.tenant_id,
            run_id=ctx.resource_id,
            actor=ctx.actor,  # its charges are written by whoever runs (or resumed) the run
        )

    def _finish(self, ctx: StepContext, conn: Connection, result: BillingRunResult) -> Transition:
        assert ctx.resource_id is not None
        conn.execute(
            billing_runs.update()
            .where(billing_runs.c.tenant_id == ctx.tenant_id, billing_runs.c.id == ctx.resource_id)
            .values(
                status="completed",
                invoices_created=result.invoices_created,
                invoices_existing=result.invoices_existing,
                charges_attempted=result.charges_attempted,
                charges_succeeded=result.charges_succeeded,
                charges_failed=result.charges_failed,
                charges_pending=result.charges_pending,
                completed_at_ms=ctx.now_ms(),
            )
        )
        row = conn.execute(
            sa.select(billing_runs).where(
                billing_runs.c.tenant_id == ctx.tenant_id, billing_runs.c.id == ctx.resource_id
            )
        ).one()
        return Finish(CommandState.SUCCEEDED, 201, billing_run_view(row), ctx.resource_id)
