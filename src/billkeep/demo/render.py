"""Printing the demo's findings with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from billkeep.demo.charges_act import ChargeBurstReport

__all__ = ["render_charge_report"]


def render_charge_report(console: Console, report: ChargeBurstReport) -> bool:
    """Print the findings; True when the data shows exactly-once held."""
    traffic = Table(title="Charge commands (requests sent, including duplicates)")
    traffic.add_column("what")
    traffic.add_column("count", justify="right")
    for status, count in sorted(report.responses.items()):
        traffic.add_row(f"HTTP-equivalent {status}", str(count))
    traffic.add_row("replays of a final outcome", str(report.replays))
    traffic.add_row("409 in-use conflicts (same key, concurrent)", str(report.in_use_conflicts))
    for code, count in sorted(report.errors.items()):
        traffic.add_row(f"error {code}", str(count))
    console.print(traffic)

    outcome = Table(title="Outcome, from the database and the gateway's records")
    outcome.add_column("what")
    outcome.add_column("count", justify="right")
    outcome.add_row("charge intents (commands)", str(report.intents))
    for state, count in sorted(report.commands_by_state.items()):
        outcome.add_row(f"  final state {state}", str(count))
    outcome.add_row("unknown/pending outcomes recovered by asking", str(report.recovered_unknowns))
    outcome.add_row("intents with exactly one gateway payment", str(report.intents_paid_once))
    outcome.add_row(
        "intents paid twice or more (must be 0)", str(report.intents_paid_twice_or_more)
    )
    outcome.add_row("local succeeded charges", str(report.local_succeeded))
    outcome.add_row("commands still not final (must be 0)", str(report.non_final_left))
    console.print(outcome)

    balance = Table(title="Trial balance (posted postings)")
    for column in ("currency", "debits", "credits", "balanced"):
        balance.add_column(column, justify="right")
    balanced = True
    for line in report.trial_balance:
        ok = line["debits"] == line["credits"]
        balanced &= ok
        balance.add_row(
            str(line["currency"]), str(line["debits"]), str(line["credits"]), "yes" if ok else "NO"
        )
    console.print(balance)

    exactly_once = (
        report.intents_paid_twice_or_more == 0
        and report.intents_paid_once == report.local_succeeded
        and report.non_final_left == 0
        and balanced
    )
    verdict = "[bold green]exactly once held[/]" if exactly_once else "[bold red]VIOLATION[/]"
    console.print(
        f"{verdict}: {report.intents_paid_twice_or_more} duplicate payments, "
        f"{report.local_succeeded} succeeded charges for {report.intents_paid_once} paid intents, "
        f"ledger {'balanced' if balanced else 'NOT balanced'}"
    )
    return exactly_once
