"""The demo's billing act against a real gateway simulator process (small quarter): every
exactly-once check holds, and the checks themselves fail on a violation."""

from __future__ import annotations

from pathlib import Path

from billkeep.demo.billing_act import (
    BillingActHooks,
    BillingQuarter,
    BillingQuarterReport,
    run_billing_quarter,
)
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.gateways.simulator_process import run_simulator_process
from billkeep.gateways.stripe import StripeGateway, StripeTimeouts
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head

FAULTS = {
    "seed": 5,
    "rules": [
        {"match": {"method": "POST", "path": "/v1/payment_intents"}, "fault": fault,
         "probability": 0.05}
        for fault in ("error_before_commit", "error_after_commit")
    ],
}  # fmt: skip


def test_a_small_quarter_bills_every_period_once_and_pays_each_invoice_at_most_once(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    db = Database(url)
    upgrade_to_head(db)
    db.dispose()
    with run_simulator_process(
        tmp_path / "sim.db", seed=5, extra_args=["--async-settle-ms", "0"]
    ) as sim:
        gateway = StripeGateway(
            sim.api_key, api_base=sim.url, timeouts=StripeTimeouts(read_ms=2_000)
        )
        hooks = BillingActHooks(
            lambda: sim.set_faults(FAULTS),
            sim.clear_faults,
            sim.settle_all_processing,
            lambda: dict(sim.state()["payment_intents"]["succeeded_by_command"]),
        )
        quarter = BillingQuarter(subscriptions=24, late_events_per_month=5, seed=5)
        try:
            report = run_billing_quarter(url, StaticGatewayDirectory(gateway), quarter, hooks)
        finally:
            gateway.close()
    assert report.failures() == []
    assert report.invoices_created == report.invoices_expected == 24 * 3
    assert report.max_invoices_per_period == 1
    assert report.duplicates_sent > 0 and report.duplicates_reported == report.duplicates_sent
    assert report.late_sent == 10 and report.late_billed_as_adjustment == 10
    assert report.events_unbilled == 0 and report.quantity_mismatches == 0
    assert report.max_payments_per_invoice == 1
    assert sum(report.invoices_by_status.values()) == 72
    assert report.invoices_by_status.get("paid", 0) > 0
    assert report.revenue_minor == report.invoiced_minor > 0


def test_the_checks_report_violations() -> None:
    clean = BillingQuarterReport(
        subscriptions=1, months=1, invoices_created=1, invoices_expected=1,
        max_invoices_per_period=1, events_sent=10, duplicates_sent=1, duplicates_reported=1,
        events_stored=9, max_payments_per_invoice=1,
        trial_balance=[{"currency": "usd", "debits": 5, "credits": 5}],
    )  # fmt: skip
    assert clean.failures() == []
    clean.max_invoices_per_period = 2
    clean.max_payments_per_invoice = 2
    clean.trial_balance = [{"currency": "usd", "debits": 5, "credits": 4}]
    assert clean.failures() == [
        "one invoice per (subscription, period)",
        "at most one payment per invoice",
        "ledger balanced",
    ]
