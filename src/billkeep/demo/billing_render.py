"""Printing the billing act's findings with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from billkeep.demo.billing_act import BillingQuarterReport

__all__ = ["render_billing_report"]


def _table(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, value in rows:
        table.add_row(what, str(value))
    return table


def render_billing_report(console: Console, report: BillingQuarterReport) -> bool:
    """Print the findings; True when every exactly-once check held."""
    console.print(
        _table(
            f"Usage ({report.subscriptions} subscriptions, {report.months} months)",
            [
                ("events sent (including retries)", report.events_sent),
                ("accepted (stored once)", report.events_accepted),
                ("duplicates sent", report.duplicates_sent),
                ("duplicates rejected as duplicates", report.duplicates_reported),
                ("other rejections (must be 0)", report.rejected),
                ("events stored", report.events_stored),
                ("events billed by no invoice (must be 0)", report.events_unbilled),
                ("events billed by a wrong invoice (must be 0)", report.events_misbilled),
                ("late events sent (period already invoiced)", report.late_sent),
                ("late events billed once as an adjustment", report.late_billed_as_adjustment),
                ("adjustment lines", report.adjustment_lines),
                ("invoices whose billed quantity != usage (must be 0)",
                 report.quantity_mismatches),
            ],
        )
    )  # fmt: skip
    invoice_rows: list[tuple[str, object]] = [
        ("billing runs (3 at once + 1 more at month ends, dunning days)",
         report.billing_runs),
        ("invoices created", report.invoices_created),
        ("invoices expected (subscriptions x months)", report.invoices_expected),
        ("max invoices per (subscription, period) (must be 1)", report.max_invoices_per_period),
    ]  # fmt: skip
    invoice_rows += [
        (f"  invoices {status}", count)
        for status, count in sorted(report.invoices_by_status.items())
    ]
    invoice_rows += [
        (f"  subscriptions {status}", count)
        for status, count in sorted(report.subscriptions_by_status.items())
    ]
    invoice_rows += [
        ("charge attempts (one command each)", report.attempts),
        ("max successful gateway payments per invoice (must be <= 1)",
         report.max_payments_per_invoice),
        ("paid invoices without exactly one payment (must be 0)",
         report.paid_without_one_payment),
        ("unpaid invoices with a payment (must be 0)", report.unpaid_with_payment),
        ("attempts still pending (must be 0)", report.pending_attempts),
        ("invoiced total (minor units)", report.invoiced_minor),
        ("revenue:sales in the ledger (minor units)", report.revenue_minor),
    ]  # fmt: skip
    console.print(
        _table("Invoices and collection, from the database and the gateway", invoice_rows)
    )
    balance = Table(title="Trial balance, billing tenant (posted postings)")
    for column in ("currency", "debits", "credits", "balanced"):
        balance.add_column(column, justify="right")
    for line in report.trial_balance:
        ok = line["debits"] == line["credits"]
        balance.add_row(
            str(line["currency"]), str(line["debits"]), str(line["credits"]), "yes" if ok else "NO"
        )
    console.print(balance)
    failures = report.failures()
    if failures:
        console.print(f"[bold red]VIOLATION[/]: {', '.join(failures)}")
    else:
        console.print(
            "[bold green]billing exactly once held[/]: one invoice per period, every event billed "
            "once, at most one payment per invoice, ledger balanced"
        )
    return not failures
