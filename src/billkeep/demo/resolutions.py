"""How each unknown gateway outcome of the demo was resolved, read back from the command ledger.

An outcome is unknown when a payment call was sent and no answer proved what happened (timeout,
5xx, dropped connection). Each such charge's history says how it became final: the same
idempotency key repeated (the gateway replayed its answer, or executed the payment once), a lookup
by `metadata[billkeep_command]` after the key expired, a new attempt after the gateway proved no
payment existed, or another source (a webhook) settled it first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from billkeep.engine.service import Billkeep
from billkeep.storage.tables.core import charge_attempts, charges, command_transitions

__all__ = ["ResolutionReport", "render_resolution_report", "resolution_report"]

_FINAL_STATES = ("succeeded", "failed")
# (text in a transition's detail, how the outcome was resolved), first match wins.
_RESOLUTIONS = (
    ("repeated with the same key", "same idempotency key repeated"),
    ("found by lookup", "found by lookup (metadata[billkeep_command])"),
    ("already settled", "settled first by another source (webhook)"),
)


@dataclass
class ResolutionReport:
    unknown_outcomes: int = 0  # gateway calls whose outcome was unknown (each retry counts)
    charges_with_unknown: int = 0
    processing_outcomes: int = 0  # asynchronous payments seen `processing`
    new_attempts_after_proof: int = 0  # attempts started because the gateway proved no payment
    resolved_by: Counter[str] = field(default_factory=Counter)
    final_by: Counter[str] = field(default_factory=Counter)
    still_unresolved: int = 0


def _how(final_detail: str) -> str:
    for needle, label in _RESOLUTIONS:
        if needle in final_detail:
            return label
    return "status check of the payment"


def resolution_report(billkeep: Billkeep, tenant_id: str) -> ResolutionReport:
    """Count unknown outcomes and classify how each charge that met one became final."""

    def read(conn: sa.Connection) -> tuple[list[tuple[str, int, str, str | None]], int]:
        rows = conn.execute(
            sa.select(
                command_transitions.c.command_id,
                command_transitions.c.seq,
                command_transitions.c.to_state,
                command_transitions.c.detail,
            )
            .join(
                charges,
                sa.and_(
                    charges.c.tenant_id == command_transitions.c.tenant_id,
                    charges.c.command_id == command_transitions.c.command_id,
                ),
            )
            .where(command_transitions.c.tenant_id == tenant_id)
            .order_by(command_transitions.c.command_id, command_transitions.c.seq)
        ).all()
        proven_absent = conn.execute(
            sa.select(sa.func.count())
            .select_from(charge_attempts)
            .where(
                charge_attempts.c.tenant_id == tenant_id,
                charge_attempts.c.resolution == "proven_absent",
            )
        ).scalar_one()
        return [(str(c), int(s), str(t), d) for c, s, t, d in rows], int(proven_absent)

    rows, proven_absent = billkeep.db.run_read(read)
    report = ResolutionReport(new_attempts_after_proof=proven_absent)
    history: dict[str, list[tuple[str, str]]] = {}
    for command_id, _seq, state, detail in rows:
        history.setdefault(command_id, []).append((state, detail or ""))
    for steps in history.values():
        unknown = sum(
            1 for s, d in steps if s == "awaiting_outcome" and d.startswith("gateway: unknown")
        )
        report.unknown_outcomes += unknown
        report.processing_outcomes += sum(
            1 for s, d in steps if s == "awaiting_outcome" and d.startswith("gateway: processing")
        )
        if unknown == 0:
            continue
        report.charges_with_unknown += 1
        final = [(s, d) for s, d in steps if s in _FINAL_STATES]
        if not final:
            report.still_unresolved += 1
            continue
        state, detail = final[-1]
        report.resolved_by[_how(detail)] += 1
        report.final_by[state] += 1
    return report


def render_resolution_report(console: Console, report: ResolutionReport) -> bool:
    """Print the resolutions; True when every unknown outcome became final."""
    table = Table(title="Unknown gateway outcomes and how each was resolved")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("gateway calls with an unknown outcome", str(report.unknown_outcomes))
    table.add_row("charges that met at least one", str(report.charges_with_unknown))
    for how, count in sorted(report.resolved_by.items()):
        table.add_row(f"  resolved: {how}", str(count))
    for state, count in sorted(report.final_by.items()):
        table.add_row(f"  ended {state}", str(count))
    table.add_row(
        "new attempts after the gateway proved no payment", str(report.new_attempts_after_proof)
    )
    table.add_row("asynchronous payments seen processing", str(report.processing_outcomes))
    table.add_row("unknown outcomes still unresolved (must be 0)", str(report.still_unresolved))
    console.print(table)
    return report.still_unresolved == 0
