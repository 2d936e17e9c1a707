"""The billing audit: I6 (one invoice per period, at most one successful payment per invoice), I9
(each usage event counted once, by the invoice that must count it) and the invoice amounts, from
raw rows and the gateway's own records.

Nothing here calls billing code. Expected amounts come from the plan numbers the clients set up
(flat fee + units x unit price, see `facts.SimPlan`); which invoice must bill an event comes from
the invoices that existed when the event was acknowledged; payments come from the gateway's store,
mapped to invoices through the charge rows that name the invoice (`charges.invoice_id`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from billkeep.sim.auditor import GatewayView, Violation
from billkeep.sim.extensions.billing.facts import (
    AcceptedEvent,
    BillingFacts,
    SimSubscription,
    month_start_ms,
)
from billkeep.storage.database import Database
from billkeep.storage.tables.billing import invoice_attempts, invoice_lines, invoices, usage_events
from billkeep.storage.tables.core import charges, journal_entries, postings

__all__ = ["BillingRows", "check_final", "check_safety", "expected_invoice"]

METRIC = "units"


@dataclass(frozen=True)
class BillingRows:
    invoices: list[Any]
    lines: list[Any]
    events: list[Any]
    attempts: list[Any]
    charges: list[Any]
    issued: dict[tuple[str, str], int]  # (tenant, entry key) -> debit amount of the posted entry

    @classmethod
    def load(cls, db: Database) -> BillingRows:
        def all_of(conn: sa.Connection, table: sa.Table) -> list[Any]:
            return list(conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all())

        with db.read() as conn:
            issued_rows = conn.execute(
                sa.select(
                    journal_entries.c.tenant_id,
                    journal_entries.c.entry_key,
                    postings.c.amount_minor,
                )
                .join(
                    postings,
                    sa.and_(
                        postings.c.tenant_id == journal_entries.c.tenant_id,
                        postings.c.entry_id == journal_entries.c.id,
                    ),
                )
                .where(
                    journal_entries.c.entry_key.like("invoice:%"),
                    journal_entries.c.state == "posted",
                    postings.c.direction == "debit",
                )
            ).all()
            return cls(
                all_of(conn, invoices),
                all_of(conn, invoice_lines),
                all_of(conn, usage_events),
                all_of(conn, invoice_attempts),
                list(
                    conn.execute(
                        sa.select(charges)
                        .where(charges.c.invoice_id.is_not(None))
                        .order_by(charges.c.id)
                    ).all()
                ),
                {(str(r.tenant_id), str(r.entry_key)): int(r.amount_minor) for r in issued_rows},
            )


def _units(properties: str) -> int:
    value = json.loads(properties).get(METRIC)
    return int(value) if isinstance(value, int) else -1


def _gateway_payments_by_invoice(
    rows: BillingRows, gateway: GatewayView
) -> dict[tuple[str, str], list[str]]:
    """Succeeded gateway payments per invoice: payment -> its command -> the charge row of that
    command -> the invoice the charge names."""
    invoice_of_command = {
        (str(c.tenant_id), str(c.command_id)): str(c.invoice_id) for c in rows.charges
    }
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for payment in gateway.payments.values():
        if payment.status != "succeeded" or payment.command is None or payment.tenant_id is None:
            continue
        invoice_id = invoice_of_command.get((payment.tenant_id, payment.command))
        if invoice_id is not None:
            found[(payment.tenant_id, invoice_id)].append(payment.id)
    return found


# --- I6 ------------------------------------------------------------------------------------------
def _i6(rows: BillingRows, facts: BillingFacts, gateway: GatewayView) -> list[Violation]:
    found: list[Violation] = []
    per_period: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for inv in rows.invoices:
        per_period[(inv.tenant_id, inv.subscription_id, inv.period_start_ms)].append(str(inv.id))
        sub = facts.subscriptions.get((inv.tenant_id, inv.subscription_id))
        if sub is None:
            found.append(Violation("I6", f"invoice {inv.id} bills an unknown subscription"))
            continue
        start = month_start_ms(sub.anchor_ms, inv.period_index)
        end = month_start_ms(sub.anchor_ms, inv.period_index + 1)
        if (inv.period_start_ms, inv.period_end_ms) != (start, end):
            found.append(
                Violation(
                    "I6", f"invoice {inv.id} period {inv.period_index} is not [{start}, {end})"
                )
            )
        if inv.period_end_ms > inv.created_at_ms:
            found.append(Violation("I6", f"invoice {inv.id} issued before its period ended"))
    for key, ids in sorted(per_period.items()):
        if len(ids) > 1:
            found.append(Violation("I6", f"subscription period {key} has invoices {ids}"))
    per_attempt: dict[tuple[str, str, int], int] = defaultdict(int)
    succeeded_attempts: dict[tuple[str, str], int] = defaultdict(int)
    for attempt in rows.attempts:
        per_attempt[(attempt.tenant_id, attempt.invoice_id, attempt.attempt_number)] += 1
        if attempt.status == "succeeded":
            succeeded_attempts[(attempt.tenant_id, attempt.invoice_id)] += 1
    found += [
        Violation("I6", f"invoice attempt {key} recorded {count} times")
        for key, count in sorted(per_attempt.items())
        if count > 1
    ]
    found += [
        Violation("I6", f"invoice {key} has {count} succeeded attempts")
        for key, count in sorted(succeeded_attempts.items())
        if count > 1
    ]
    paid_at_gateway = _gateway_payments_by_invoice(rows, gateway)
    for invoice_key, payments in sorted(paid_at_gateway.items()):
        if len(payments) > 1:
            found.append(
                Violation("I6", f"invoice {invoice_key} paid {len(payments)} times: {payments}")
            )
    charge_by_id = {(str(c.tenant_id), str(c.id)): c for c in rows.charges}
    for inv in rows.invoices:
        if inv.status != "paid":
            continue
        charge = charge_by_id.get((inv.tenant_id, str(inv.charge_id)))
        payments = paid_at_gateway.get((inv.tenant_id, inv.id), [])
        if (
            charge is None
            or charge.status != "succeeded"
            or charge.gateway_reference not in payments
        ):
            found.append(
                Violation(
                    "I6", f"invoice {inv.id} is paid but no succeeded gateway payment backs it"
                )
            )
        elif (charge.amount_minor, inv.amount_paid_minor) != (inv.total_minor, inv.total_minor):
            found.append(
                Violation(
                    "I6",
                    f"invoice {inv.id} total {inv.total_minor}: charged {charge.amount_minor}, "
                    f"recorded paid {inv.amount_paid_minor}",
                )
            )
    return found


# --- I9 and amounts --------------------------------------------------------------------------------
def _i9_and_amounts(rows: BillingRows, facts: BillingFacts) -> list[Violation]:
    found: list[Violation] = []
    by_invoice = {(str(inv.tenant_id), str(inv.id)): inv for inv in rows.invoices}
    current_units: dict[tuple[str, str], int] = defaultdict(int)
    late_units: dict[tuple[str, str], int] = defaultdict(int)
    for event in rows.events:
        key = (str(event.tenant_id), str(event.event_id))
        accepted = facts.accepted.get(key)
        stored = (event.subscription_id, event.timestamp_ms, _units(event.properties))
        if accepted is None:
            found.append(Violation("I9", f"usage event {key} stored but never acknowledged"))
            continue
        if stored != (accepted.subscription_id, accepted.timestamp_ms, accepted.units):
            found.append(
                Violation("I9", f"usage event {key} stored as {stored}, accepted as {accepted}")
            )
        if event.invoice_id is None:
            continue
        inv = by_invoice.get((key[0], str(event.invoice_id)))
        if inv is None:
            found.append(Violation("I9", f"usage event {key} counted by a missing invoice"))
            continue
        if inv.subscription_id != event.subscription_id or not (
            facts.subscriptions[(key[0], inv.subscription_id)].anchor_ms
            <= event.timestamp_ms
            < inv.period_end_ms
        ):
            found.append(
                Violation("I9", f"usage event {key} counted by invoice {inv.id} of another period")
            )
        elif event.timestamp_ms >= inv.period_start_ms:
            current_units[(key[0], inv.id)] += accepted.units
        else:
            late_units[(key[0], inv.id)] += accepted.units
    lines: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for line in rows.lines:
        lines[(str(line.tenant_id), str(line.invoice_id))].append(line)
    billed_per_subscription: dict[tuple[str, str], int] = defaultdict(int)
    for key, inv in sorted(by_invoice.items()):
        sub = facts.subscriptions.get((key[0], inv.subscription_id))
        if sub is None:
            continue
        plan = sub.plan
        mine = lines.get(key, [])
        price_units = sum(
            line.quantity for line in mine if line.kind == "price" and line.metric == METRIC
        )
        flat = sum(
            line.amount_minor for line in mine if line.kind == "price" and line.metric is None
        )
        adjusted = sum(line.amount_minor for line in mine if line.kind == "adjustment")
        metered = sum(
            line.amount_minor for line in mine if line.kind == "price" and line.metric == METRIC
        )
        billed_per_subscription[(key[0], inv.subscription_id)] += price_units
        billed_per_subscription[(key[0], inv.subscription_id)] += adjusted // max(
            plan.unit_minor, 1
        )
        if price_units != current_units[key] or metered != plan.unit_minor * current_units[key]:
            found.append(
                Violation(
                    "I9",
                    f"invoice {inv.id} bills {price_units} units ({metered}) of its period, "
                    f"it counts events of {current_units[key]} units",
                )
            )
        if adjusted != plan.unit_minor * late_units[key]:
            found.append(
                Violation(
                    "I9",
                    f"invoice {inv.id} adjusts {adjusted} for late usage, it counts late events "
                    f"of {late_units[key]} units",
                )
            )
        expected = plan.base_minor + plan.unit_minor * (current_units[key] + late_units[key])
        if flat != plan.base_minor or inv.total_minor != expected:
            found.append(
                Violation(
                    "amount",
                    f"invoice {inv.id} total {inv.total_minor} (flat {flat}), expected {expected}",
                )
            )
        if sum(line.amount_minor for line in mine) != inv.total_minor:
            found.append(Violation("amount", f"invoice {inv.id} lines do not add up to its total"))
        if inv.currency != plan.currency:
            found.append(
                Violation("amount", f"invoice {inv.id} in {inv.currency}, plan in {plan.currency}")
            )
        issued = rows.issued.get((key[0], f"invoice:{inv.id}:issued"))
        if issued != inv.total_minor:
            found.append(
                Violation("I3", f"invoice {inv.id} total {inv.total_minor}, issued entry {issued}")
            )
    # Nothing priced or posted for an invoice that does not exist (a phantom issued on a conflict).
    for tenant_id, invoice_id in sorted(lines):
        if (tenant_id, invoice_id) not in by_invoice:
            found.append(Violation("I6", f"invoice lines of a missing invoice {invoice_id}"))
    for tenant_id, entry_key in sorted(rows.issued):
        invoice_id = entry_key.removeprefix("invoice:").removesuffix(":issued")
        if (tenant_id, invoice_id) not in by_invoice:
            found.append(Violation("I3", f"{entry_key} posted for a missing invoice"))
    sent_units: dict[tuple[str, str], int] = defaultdict(int)
    for accepted in facts.accepted.values():
        sent_units[(accepted.tenant_id, accepted.subscription_id)] += accepted.units
    for key, billed in sorted(billed_per_subscription.items()):
        if billed > sent_units[key]:
            found.append(
                Violation(
                    "I9", f"subscription {key} billed {billed} units, {sent_units[key]} accepted"
                )
            )
    return found


def check_safety(db: Database, gateway: GatewayView, facts: BillingFacts) -> list[Violation]:
    rows = BillingRows.load(db)
    found = [Violation(invariant, detail) for invariant, detail in facts.answer_violations]
    found += _i6(rows, facts, gateway)
    found += _i9_and_amounts(rows, facts)
    return sorted(set(found))


# --- final ---------------------------------------------------------------------------------------
def expected_invoice(event: AcceptedEvent, invoices_of_subscription: list[Any]) -> Any | None:
    """The invoice that must count `event`: billing claims every unclaimed event before the period
    end, so it is the first invoice of its subscription created after the event was acknowledged
    (a higher period index than any invoiced then) whose period ends after the event; None while no
    such invoice exists (the event waits for the next one: docs/billing.md, late events)."""
    candidates = [
        inv
        for inv in invoices_of_subscription
        if inv.period_index > event.invoiced_index_at_ack and inv.period_end_ms > event.timestamp_ms
    ]
    return min(
        candidates, key=lambda inv: (inv.period_index, inv.created_at_ms, inv.id), default=None
    )


def _every_period_invoiced(rows: BillingRows, facts: BillingFacts, now_ms: int) -> list[Violation]:
    found: list[Violation] = []
    starts: dict[tuple[str, str], set[int]] = defaultdict(set)
    for inv in rows.invoices:
        starts[(inv.tenant_id, inv.subscription_id)].add(int(inv.period_start_ms))
    for key, sub in sorted(facts.subscriptions.items()):
        expected: set[int] = set()
        index = 0
        while month_start_ms(sub.anchor_ms, index + 1) <= now_ms:
            expected.add(month_start_ms(sub.anchor_ms, index))
            index += 1
        if starts[key] != expected:
            found.append(
                Violation(
                    "I6",
                    f"subscription {key}: invoiced periods {sorted(starts[key])}, "
                    f"ended periods {sorted(expected)}",
                )
            )
    return found


def _invoices_settled(
    rows: BillingRows, facts: BillingFacts, gateway: GatewayView, now_ms: int
) -> list[Violation]:
    """Once faults stop and recovery ran: no attempt is left pending, and every invoice is paid
    (by exactly one gateway payment), uncollectible after every allowed attempt declined, or open
    with its last attempt declined and the next one scheduled (dunning.py: a decline schedules
    retry n+1 after `dunning_delays_ms[n-1]`, the decline after the last delay ends it)."""
    found: list[Violation] = []
    paid_at_gateway = _gateway_payments_by_invoice(rows, gateway)
    attempts: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for attempt in rows.attempts:
        attempts[(attempt.tenant_id, attempt.invoice_id)].append(attempt)
    for inv in rows.invoices:
        key = (str(inv.tenant_id), str(inv.id))
        mine = sorted(attempts.get(key, []), key=lambda a: int(a.attempt_number))
        payments = paid_at_gateway.get(key, [])
        declined = bool(mine) and all(a.status == "failed" for a in mine)
        if any(a.status == "pending" for a in mine):
            found.append(Violation("I2", f"invoice {inv.id} has an attempt still pending"))
        if inv.status == "paid":
            if len(payments) != 1:
                found.append(
                    Violation("I6", f"invoice {inv.id} paid with {len(payments)} gateway payments")
                )
            continue
        if payments:
            found.append(
                Violation("I6", f"invoice {inv.id} is {inv.status} but paid at the gateway")
            )
        if inv.status == "uncollectible":
            if len(mine) != facts.dunning_attempts + 1 or not declined:
                found.append(
                    Violation(
                        "I6",
                        f"invoice {inv.id} uncollectible after attempts "
                        f"{[(a.attempt_number, a.status) for a in mine]}",
                    )
                )
        elif not (
            inv.status == "open"
            and declined
            and len(mine) <= facts.dunning_attempts
            and inv.next_attempt_at_ms is not None
            and inv.next_attempt_at_ms > now_ms
        ):
            found.append(
                Violation(
                    "I2",
                    f"invoice {inv.id} still {inv.status} after attempts "
                    f"{[(a.attempt_number, a.status) for a in mine]} "
                    f"(next attempt {inv.next_attempt_at_ms}, now {now_ms})",
                )
            )
    return found


def _usage_counted_once(rows: BillingRows, facts: BillingFacts) -> list[Violation]:
    found: list[Violation] = []
    per_subscription: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for inv in rows.invoices:
        per_subscription[(inv.tenant_id, inv.subscription_id)].append(inv)
    claimed = {(str(e.tenant_id), str(e.event_id)): e.invoice_id for e in rows.events}
    for key, event in sorted(facts.accepted.items()):
        must = expected_invoice(event, per_subscription.get((key[0], event.subscription_id), []))
        actual = claimed.get(key)
        if (None if must is None else must.id) != actual:
            found.append(
                Violation(
                    "I9",
                    f"usage event {key} (t={event.timestamp_ms}, acknowledged after period "
                    f"{event.invoiced_index_at_ack}) counted by {actual}, must be "
                    f"{None if must is None else must.id}",
                )
            )
    return found


def check_final(
    db: Database, gateway: GatewayView, facts: BillingFacts, now_ms: int
) -> list[Violation]:
    rows = BillingRows.load(db)
    found = check_safety(db, gateway, facts)
    found += _every_period_invoiced(rows, facts, now_ms)
    found += _invoices_settled(rows, facts, gateway, now_ms)
    found += _usage_counted_once(rows, facts)
    return sorted(set(found))


def subscriptions_of(facts: BillingFacts, tenant_id: str) -> list[SimSubscription]:
    return [s for (t, _), s in sorted(facts.subscriptions.items()) if t == tenant_id]
