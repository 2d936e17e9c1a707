"""The chaos run's audit: the simulation auditor's checks over a simulator process, plus the
checks only a real-process run can make (client answers over HTTP, invoices, usage).

The gateway's truth is read over HTTP from the simulator process: every PaymentIntent and Refund
(`GET /v1/payment_intents`, `GET /v1/refunds`, paged) and its own summary (`GET /_sim/state`).
The real Stripe adapter does not tag objects with a tenant, so a gateway object is attributed to
the tenant of the command named in its `metadata[billkeep_command]` (command ids are global).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from billkeep.chaos.client import ClientLog
from billkeep.gateways.stripe import COMMAND_METADATA_KEY
from billkeep.sim.auditor import Auditor, GatewayPayment, GatewayRefund, GatewayView, Violation
from billkeep.sim.gateway import GatewayRecords
from billkeep.sim.history import ClientHistory
from billkeep.storage.database import Database
from billkeep.storage.tables.billing import (
    invoice_attempts,
    invoice_lines,
    invoices,
    subscriptions,
    usage_events,
)
from billkeep.storage.tables.core import charges, commands

__all__ = ["HttpGateway", "audit_run"]

_PAGE_LIMIT = 100
_MAX_PAGES = 10_000
_HTTP_TIMEOUT_S = 30.0
MONTH_MS = 31 * 86_400_000  # a subscription older than this has at least one ended period


@dataclass(frozen=True)
class HttpGateway:
    """The simulator process's records, read over its Stripe API and control API."""

    url: str
    api_key: str

    def _list(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": str(_PAGE_LIMIT)}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        for _ in range(_MAX_PAGES):
            response = httpx.get(
                f"{self.url}{path}", params=params, headers=headers, timeout=_HTTP_TIMEOUT_S
            )
            response.raise_for_status()
            page = response.json()
            items.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return items
            params["starting_after"] = str(page["data"][-1]["id"])
        raise RuntimeError(f"{path}: more than {_MAX_PAGES} pages")

    def state(self) -> Any:
        response = httpx.get(f"{self.url}/_sim/state", timeout=_HTTP_TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    def view(self, tenant_of_command: Mapping[str, str]) -> GatewayView:
        payments: dict[str, GatewayPayment] = {}
        for obj in self._list("/v1/payment_intents"):
            command = (obj.get("metadata") or {}).get(COMMAND_METADATA_KEY)
            payments[obj["id"]] = GatewayPayment(
                obj["id"],
                tenant_of_command.get(command or ""),
                command,
                int(obj["amount"]),
                str(obj["currency"]),
                str(obj["status"]),
            )
        refunds: dict[str, GatewayRefund] = {}
        for obj in self._list("/v1/refunds"):
            command = (obj.get("metadata") or {}).get(COMMAND_METADATA_KEY)
            refunds[obj["id"]] = GatewayRefund(
                obj["id"],
                tenant_of_command.get(command or ""),
                command,
                str(obj["payment_intent"]),
                int(obj["amount"]),
                str(obj["currency"]),
                str(obj["status"]),
            )
        return GatewayView(payments, refunds)


def _tenant_of_command(db: Database) -> dict[str, str]:
    with db.read() as conn:
        rows = conn.execute(sa.select(commands.c.id, commands.c.tenant_id)).all()
    return {str(r.id): str(r.tenant_id) for r in rows}


def audit_run(
    db: Database,
    gateway: HttpGateway,
    log: ClientLog,
    tenants: Mapping[str, str],
    now_ms: int,
) -> list[Violation]:
    """Every invariant the run can check; `tenants` maps client labels to tenant ids."""
    tenant_of_command = _tenant_of_command(db)
    view = gateway.view(tenant_of_command)
    auditor = Auditor(db, None, GatewayRecords(), ClientHistory(), gateway_view=lambda: view)
    found = list(auditor.check_final())  # I1, I2, I3, I4, I7, I8, I10 from rows + gateway
    state = gateway.state()
    found += _i1_sim_state(state)
    found += _i7_sim_state(state, view)
    found += _gateway_objects_named(view)
    found += _i2_clients_final(log)
    found += _i5_answers_identical(log)
    found += _i6_invoices(db, view, now_ms)
    found += _i9_usage(db, log, tenants["t1"])
    found += [Violation("I10", breach) for breach in log.breaches]
    found += _i11_acknowledged_recorded(db, log)
    return sorted(set(found))


# --- checks from the simulator's own summary -----------------------------------------------------
def _i1_sim_state(state: Any) -> list[Violation]:
    by_command: dict[str, int] = state["payment_intents"]["succeeded_by_command"]
    return [
        Violation("I1", f"/_sim/state: command {command} paid {count} times")
        for command, count in sorted(by_command.items())
        if count > 1
    ]


def _i7_sim_state(state: Any, view: GatewayView) -> list[Violation]:
    refunded: dict[str, int] = state["refunds"]["amount_by_payment_intent"]
    found: list[Violation] = []
    for payment_id, amount in sorted(refunded.items()):
        payment = view.payments.get(payment_id)
        if payment is None or amount > payment.amount_minor:
            found.append(Violation("I7", f"/_sim/state: {payment_id} refunded {amount}"))
    return found


def _gateway_objects_named(view: GatewayView) -> list[Violation]:
    """Every gateway object names a recorded billkeep command (I11: recorded before the effect)."""
    found = [
        Violation("I11", f"gateway payment {p.id} names no recorded command ({p.command})")
        for p in view.payments.values()
        if p.tenant_id is None
    ]
    found += [
        Violation("I11", f"gateway refund {r.id} names no recorded command ({r.command})")
        for r in view.refunds.values()
        if r.tenant_id is None
    ]
    return found


# --- checks from what the clients were told ------------------------------------------------------
def _i2_clients_final(log: ClientLog) -> list[Violation]:
    return [Violation("I2", f"{ref} never got a final answer") for ref in sorted(log.pending)]


def _i5_answers_identical(log: ClientLog) -> list[Violation]:
    found: list[Violation] = []
    for ref, answers in sorted(log.finals.items()):
        first = answers[0]
        for later in answers[1:]:
            if (later.status, later.body) != (first.status, first.body):
                found.append(
                    Violation(
                        "I5",
                        f"{ref}: first {first.status} {first.body[:200]!r}, "
                        f"later {later.status} {later.body[:200]!r}",
                    )
                )
    return found


def _i11_acknowledged_recorded(db: Database, log: ClientLog) -> list[Violation]:
    found: list[Violation] = []
    with db.read() as conn:
        recorded_charges = {
            (str(r.tenant_id), str(r.id))
            for r in conn.execute(sa.select(charges.c.tenant_id, charges.c.id)).all()
        }
        recorded_commands = {
            (str(r.tenant_id), str(r.id))
            for r in conn.execute(sa.select(commands.c.tenant_id, commands.c.id)).all()
        }
        recorded_events = {
            (str(r.tenant_id), str(r.event_id))
            for r in conn.execute(sa.select(usage_events.c.tenant_id, usage_events.c.event_id))
        }
    for tenant_id, ids in sorted(log.charges_seen.items()):
        for charge_id in sorted(ids):
            if (tenant_id, charge_id) not in recorded_charges:
                found.append(Violation("I11", f"charge {charge_id} was answered, not recorded"))
    for tenant_id, ids in sorted(log.commands_seen.items()):
        for command_id in sorted(ids):
            if (tenant_id, command_id) not in recorded_commands:
                found.append(Violation("I11", f"command {command_id} was answered, not recorded"))
    for tenant_id, ids in sorted(log.events_acked.items()):
        for event_id in sorted(ids):
            if (tenant_id, event_id) not in recorded_events:
                found.append(Violation("I11", f"usage event {event_id} acknowledged, not recorded"))
    return found


# --- billing: I6 and I9 --------------------------------------------------------------------------
def _i6_invoices(db: Database, view: GatewayView, now_ms: int) -> list[Violation]:
    found: list[Violation] = []
    with db.read() as conn:
        invoice_rows = conn.execute(sa.select(invoices)).all()
        attempt_rows = conn.execute(sa.select(invoice_attempts)).all()
    with db.read() as conn:
        ended = conn.execute(
            sa.select(subscriptions.c.tenant_id, subscriptions.c.id).where(
                subscriptions.c.start_at_ms <= now_ms - MONTH_MS
            )
        ).all()
    invoiced = {(inv.tenant_id, inv.subscription_id) for inv in invoice_rows}
    for sub in ended:
        if (sub.tenant_id, sub.id) not in invoiced:
            found.append(Violation("I6", f"subscription {sub.id}: an ended period has no invoice"))
    per_period: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for inv in invoice_rows:
        per_period[(inv.tenant_id, inv.subscription_id, inv.period_index)].append(inv.id)
    for key, ids in sorted(per_period.items()):
        if len(ids) > 1:
            found.append(Violation("I6", f"subscription period {key} has invoices {ids}"))
    succeeded_by_command: dict[str, int] = defaultdict(int)
    for payment in view.payments.values():
        if payment.status == "succeeded" and payment.command is not None:
            succeeded_by_command[payment.command] += 1
    per_attempt: dict[tuple[str, str, int], int] = defaultdict(int)
    paid_attempts: dict[tuple[str, str], int] = defaultdict(int)
    paid_at_gateway: dict[tuple[str, str], int] = defaultdict(int)
    for attempt in attempt_rows:
        invoice = (attempt.tenant_id, attempt.invoice_id)
        per_attempt[(*invoice, attempt.attempt_number)] += 1
        if attempt.status == "succeeded":
            paid_attempts[invoice] += 1
        paid_at_gateway[invoice] += succeeded_by_command.get(attempt.command_id or "", 0)
    for key, count in sorted(per_attempt.items()):
        if count > 1:
            found.append(Violation("I6", f"invoice attempt {key} recorded {count} times"))
    for invoice, count in sorted(paid_attempts.items()):
        if count > 1:
            found.append(Violation("I6", f"invoice {invoice} has {count} succeeded attempts"))
    for invoice, count in sorted(paid_at_gateway.items()):
        if count > 1:
            found.append(Violation("I6", f"invoice {invoice} paid {count} times at the gateway"))
    return found


def _i9_usage(db: Database, log: ClientLog, t1: str) -> list[Violation]:
    """Each event is claimed by at most one invoice (one column), the invoice of its own
    subscription whose period covers it, and every invoice bills exactly what it claimed."""
    found: list[Violation] = []
    with db.read() as conn:
        event_rows = conn.execute(
            sa.select(usage_events).where(usage_events.c.tenant_id == t1)
        ).all()
        invoice_rows = {
            str(r.id): r
            for r in conn.execute(sa.select(invoices).where(invoices.c.tenant_id == t1)).all()
        }
        line_rows = conn.execute(
            sa.select(invoice_lines).where(invoice_lines.c.tenant_id == t1)
        ).all()
    claimed: dict[str, int] = defaultdict(int)
    for event in event_rows:
        if event.invoice_id is None:
            continue
        invoice = invoice_rows.get(str(event.invoice_id))
        if invoice is None:
            found.append(Violation("I9", f"event {event.event_id} claimed by a missing invoice"))
            continue
        claimed[invoice.id] += 1
        if invoice.subscription_id != event.subscription_id:
            found.append(Violation("I9", f"event {event.event_id} billed to another subscription"))
        if event.timestamp_ms >= invoice.period_end_ms:
            found.append(Violation("I9", f"event {event.event_id} billed before it happened"))
    invoiced_until: dict[str, int] = defaultdict(int)
    for invoice in invoice_rows.values():
        sub = str(invoice.subscription_id)
        invoiced_until[sub] = max(invoiced_until[sub], int(invoice.period_end_ms))
    for event in event_rows:
        until = invoiced_until.get(str(event.subscription_id), 0)
        if event.invoice_id is None and event.timestamp_ms < until:
            found.append(Violation("I9", f"event {event.event_id} of an invoiced period unbilled"))
    billed: dict[str, int] = defaultdict(int)
    for line in line_rows:
        if line.metric is not None:
            billed[str(line.invoice_id)] += int(line.quantity)
    for invoice_id in sorted(invoice_rows):
        if billed[invoice_id] != claimed[invoice_id]:
            found.append(
                Violation(
                    "I9",
                    f"invoice {invoice_id} bills {billed[invoice_id]} units, "
                    f"claimed {claimed[invoice_id]} events",
                )
            )
    return found
