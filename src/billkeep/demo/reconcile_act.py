"""Last act: reconcile the demo's own run against the gateway simulator, with one payment made
outside billkeep injected first, and print the break summary.

The run goes through `reconciliation.create` (the operation behind POST /v1/reconciliations) for
the charges act's tenant and gateway, over a window covering every charge of that tenant. The act
passes only when:

- the injected payment is found: a `missing_in_ledger` break with its reference; and
- zero breaks are attributable to billkeep. Attributable = every break of the run except
  (a) the injected payment's own break and (b) gateway fees the run itself posted
  (`missing_in_ledger` with fee evidence, healed with `fee_posted`): billkeep learns processing
  fees only from the gateway's balance transactions, and reconciliation is where it posts them.
  Anything else (a status or amount mismatch, a duplicate, a payment missing on either side, an
  unposted fee the run could not heal, a pending_timing) counts against billkeep.

The demo's tenants share one simulator account (a real deployment gives each tenant its own
gateway credentials), so the source leaves out the payments carrying another demo tenant's
billkeep command: they are that tenant's to reconcile, not outside payments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.engine.service import Billkeep
from billkeep.gateways.simulator_process import SimulatorProcess
from billkeep.reconciliation.matching import MatchKind
from billkeep.reconciliation.operation import OPERATION, install
from billkeep.reconciliation.runner import ReconciliationConfig
from billkeep.reconciliation.sources import (
    GatewaySource,
    SourceFee,
    SourcePayment,
    SourceReversal,
    StripeSource,
)
from billkeep.reconciliation.views import all_breaks
from billkeep.storage.tables.core import charges, commands

__all__ = [
    "OUTSIDE_PAYMENT_AMOUNT_MINOR",
    "ReconcileActReport",
    "render_reconcile_report",
    "run_reconcile_act",
]

OUTSIDE_PAYMENT_AMOUNT_MINOR = 4_321
OUTSIDE_PAYMENT_CURRENCY = "usd"
# The window reaches a second past both ends: the simulator stamps objects in whole seconds.
WINDOW_PAD_MS = 1_000
IDEMPOTENCY_KEY = "demo-reconcile-own-run"
FEE_RESOLUTION = "fee_posted"


@dataclass
class ReconcileActReport:
    run: dict[str, Any]
    outside_reference: str
    breaks_by_type: Counter[str] = field(default_factory=Counter)
    fee_heals: int = 0
    outside_found: bool = False
    attributable: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outside_found and not self.attributable


class _WithoutOtherTenants:
    """A gateway source minus the payments another tenant's billkeep commands made."""

    def __init__(self, inner: GatewaySource, other_commands: frozenset[str]) -> None:
        self._inner = inner
        self._other = other_commands
        # The payments left out; the run lists payments before refunds and disputes.
        self._other_payments: set[str] = set()

    def payments(self, from_ms: int, to_ms: int) -> Iterator[list[SourcePayment]]:
        for page in self._inner.payments(from_ms, to_ms):
            self._other_payments.update(p.reference for p in page if p.command_ref in self._other)
            yield [p for p in page if p.command_ref not in self._other]

    def fees(self, from_ms: int, to_ms: int) -> Iterator[list[SourceFee]]:
        yield from self._inner.fees(from_ms, to_ms)

    def reversals(self, from_ms: int, to_ms: int) -> Iterator[list[SourceReversal]]:
        for page in self._inner.reversals(from_ms, to_ms):
            yield [r for r in page if r.payment_reference not in self._other_payments]


def _other_tenants_commands(bk: Billkeep, tenant_id: str) -> frozenset[str]:
    rows = bk.db.run_read(
        lambda conn: (
            conn.execute(sa.select(commands.c.id).where(commands.c.tenant_id != tenant_id))
            .scalars()
            .all()
        )
    )
    return frozenset(str(r) for r in rows)


def _window(bk: Billkeep, tenant_id: str) -> tuple[int, int]:
    first = bk.db.run_read(
        lambda conn: conn.execute(
            sa.select(sa.func.min(charges.c.created_at_ms)).where(charges.c.tenant_id == tenant_id)
        ).scalar_one()
    )
    now_ms = bk.clock.now_ms()
    start = (int(first) if first is not None else now_ms) - WINDOW_PAD_MS
    return start, now_ms + WINDOW_PAD_MS


def _inject_outside_payment(sim: SimulatorProcess) -> str:
    intent = sim.control(
        "POST",
        "/_sim/payment_intents",
        {
            "amount": OUTSIDE_PAYMENT_AMOUNT_MINOR,
            "currency": OUTSIDE_PAYMENT_CURRENCY,
            "description": "paid outside billkeep (demo)",
        },
    )
    assert intent["status"] == "succeeded", intent
    return str(intent["id"])


def _is_fee_heal(brk: dict[str, Any]) -> bool:
    return (
        brk["type"] == MatchKind.MISSING_IN_LEDGER.value
        and "fee_minor" in brk["expected"]
        and brk["healed"]
        and FEE_RESOLUTION in (brk["resolution"] or "").split(",")
    )


def run_reconcile_act(bk: Billkeep, tenant_id: str, sim: SimulatorProcess) -> ReconcileActReport:
    """Inject the outside payment, reconcile the tenant's window, classify every break."""
    outside = _inject_outside_payment(sim)
    other = _other_tenants_commands(bk, tenant_id)
    if OPERATION not in bk.executor.operations:
        install(
            bk,
            lambda _t, _g: _WithoutOtherTenants(StripeSource(sim.api_key, sim.url), other),
            # Every command of the demo is final by now: nothing is young enough to wait for.
            ReconciliationConfig(grace_period_ms=0),
        )
    start_ms, end_ms = _window(bk, tenant_id)
    request = {
        "gateway_id": bk.services.gateways.default_gateway_id(tenant_id),
        "from": ms_to_rfc3339(start_ms),
        "to": ms_to_rfc3339(end_ms),
    }
    result = bk.execute(tenant_id, OPERATION, request, idempotency_key=IDEMPOTENCY_KEY)
    assert result.status == 201, result.body_text
    run = result.body()
    report = ReconcileActReport(run=run, outside_reference=outside)
    for brk in all_breaks(bk.db, tenant_id, run["id"]):
        report.breaks_by_type[brk["type"]] += 1
        if brk["gateway_reference"] == outside and brk["type"] == "missing_in_ledger":
            report.outside_found = True
        elif _is_fee_heal(brk):
            report.fee_heals += 1
        else:
            report.attributable.append(brk)
    return report


def render_reconcile_report(console: Console, report: ReconcileActReport) -> bool:
    summary = report.run["summary"]
    console.print(
        f"[bold]reconciliation act[/]: run {report.run['id']} over {report.run['from']} .. "
        f"{report.run['to']}: {summary['gateway_records']} gateway records, "
        f"{summary['ledger_records']} ledger records, {summary['matched']} matched, "
        f"{summary['healed']} healed"
    )
    table = Table("break type", "count", "of which")
    for kind, count in sorted(summary["breaks"].items()):
        notes = []
        if kind == "missing_in_ledger":
            if report.outside_found:
                notes.append(f"1 injected outside payment {report.outside_reference}")
            if report.fee_heals:
                notes.append(f"{report.fee_heals} gateway fees, posted by this run")
        table.add_row(kind, str(count), "; ".join(notes))
    console.print(table)
    for brk in report.attributable[:10]:
        console.print(
            f"  [red]break[/] {brk['type']} {brk['gateway_reference']} {brk['resource_id']} "
            f"expected={brk['expected']} actual={brk['actual']}"
        )
    found = "[green]found[/]" if report.outside_found else "[red]NOT found[/]"
    colour = "green" if not report.attributable else "red"
    console.print(
        f"injected outside payment {report.outside_reference}: {found}; "
        f"breaks attributable to billkeep: [{colour}]{len(report.attributable)}[/]"
    )
    return report.ok
