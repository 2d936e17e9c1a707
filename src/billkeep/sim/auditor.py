"""The independent auditor: checks the invariants (I1-I11) from raw rows and the gateway's records.

It never calls engine code to decide what is right. The expected money comes from the simulated
gateway's own store (which payments succeeded, which refunds were made, for which tenant); the
expected command histories from the state machine's edges; the expected answers from what each
logical client was told. The engine's bookkeeping is only ever the thing being checked.

Safety invariants (I1, I3, I5, I7, I8, I10, I11) must hold after every step, faults or not.
Liveness (I2) and agreement with the gateway (I4) are checked once faults stop and recovery ran.
This module checks what charges and refunds move; each extension of the simulation
(`billkeep.sim.extensions`: webhooks, reconciliation, billing) audits what it drives, I6 and I9
included, beside it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import sqlalchemy as sa

from billkeep.domain.commands import FINAL_STATES, CommandState, IllegalTransition, check_transition
from billkeep.gateways.simulator import SimulatorCore
from billkeep.sim.gateway import COMMAND_METADATA_KEY, TENANT_METADATA_KEY, GatewayRecords
from billkeep.sim.history import ClientHistory, Intent
from billkeep.storage.database import Database
from billkeep.storage.tables.core import (
    accounts,
    charge_attempts,
    charges,
    command_transitions,
    commands,
    customers,
    journal_entries,
    postings,
    refunds,
)
from billkeep.storage.tables.reconciliation import gateway_refunds

__all__ = ["Auditor", "GatewayPayment", "GatewayRefund", "GatewayView", "Violation"]

_FINAL = frozenset(s.value for s in FINAL_STATES)
_CLAIM_DETAILS = ("claimed", "lease taken over")
_CHARGE_FINAL = ("succeeded", "failed")
_REFUND_HOLDING = ("pending", "succeeded")


@dataclass(frozen=True, order=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass(frozen=True)
class GatewayPayment:
    id: str
    tenant_id: str | None
    command: str | None
    amount_minor: int
    currency: str
    status: str


@dataclass(frozen=True)
class GatewayRefund:
    id: str
    tenant_id: str | None
    command: str | None
    payment: str
    amount_minor: int
    currency: str
    status: str


@dataclass(frozen=True)
class GatewayView:
    payments: dict[str, GatewayPayment]
    refunds: dict[str, GatewayRefund]

    @classmethod
    def load(cls, core: SimulatorCore) -> GatewayView:
        with core.store.read() as tx:
            rows = tx.conn.execute(
                "SELECT kind, obj FROM objects WHERE kind IN ('payment_intent', 'refund')"
                " ORDER BY seq"
            ).fetchall()
        payments: dict[str, GatewayPayment] = {}
        refunds_: dict[str, GatewayRefund] = {}
        for kind, raw in rows:
            obj = json.loads(raw)
            meta = obj.get("metadata") or {}
            if kind == "payment_intent":
                payments[obj["id"]] = GatewayPayment(
                    obj["id"],
                    meta.get(TENANT_METADATA_KEY),
                    meta.get(COMMAND_METADATA_KEY),
                    int(obj["amount"]),
                    str(obj["currency"]),
                    str(obj["status"]),
                )
            else:
                refunds_[obj["id"]] = GatewayRefund(
                    obj["id"],
                    meta.get(TENANT_METADATA_KEY),
                    meta.get(COMMAND_METADATA_KEY),
                    str(obj["payment_intent"]),
                    int(obj["amount"]),
                    str(obj["currency"]),
                    str(obj["status"]),
                )
        return cls(payments, refunds_)


@dataclass(frozen=True)
class _Rows:
    """One consistent read of every table the invariants talk about."""

    commands: list[Any]
    transitions: list[Any]
    customers: list[Any]
    charges: list[Any]
    attempts: list[Any]
    refunds: list[Any]
    accounts: list[Any]
    entries: list[Any]
    postings: list[Any]
    gateway_refunds: list[Any]  # refunds made at the gateway outside billkeep, once learned

    @classmethod
    def load(cls, db: Database) -> _Rows:
        def all_of(conn: sa.Connection, table: sa.Table) -> list[Any]:
            return list(conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all())

        with db.read() as conn:
            return cls(
                *(
                    all_of(conn, t)
                    for t in (
                        commands,
                        command_transitions,
                        customers,
                        charges,
                        charge_attempts,
                        refunds,
                        accounts,
                        journal_entries,
                        postings,
                        gateway_refunds,
                    )
                )
            )


class Auditor:
    """Keeps what it saw last time, so it can also check that nothing moved backward (I8)."""

    def __init__(
        self,
        db: Database,
        core: SimulatorCore | None,
        records: GatewayRecords,
        history: ClientHistory,
        *,
        gateway_view: Callable[[], GatewayView] | None = None,
    ) -> None:
        """`gateway_view` replaces reading `core`'s store in-process (e.g. the chaos harness reads
        a simulator process over HTTP); the checks themselves are the same."""
        assert core is not None or gateway_view is not None, (
            "the auditor needs the gateway's records"
        )
        self.db = db
        self.core = core
        self.records = records
        self.history = history
        self._gateway_view = gateway_view
        self._seen_final_commands: dict[tuple[str, str], tuple[str, int | None, str | None]] = {}
        self._seen_charge_status: dict[tuple[str, str], str] = {}
        self._seen_refund_status: dict[tuple[str, str], str] = {}
        self.audits = 0

    # --- entry points ----------------------------------------------------------------------------
    def load_gateway(self) -> GatewayView:
        if self._gateway_view is not None:
            return self._gateway_view()
        assert self.core is not None
        return GatewayView.load(self.core)

    def check_safety(self) -> list[Violation]:
        self.audits += 1
        rows = _Rows.load(self.db)
        gateway = self.load_gateway()
        found: list[Violation] = []
        found += self._i1_one_payment_per_intent(rows, gateway)
        found += self._i3_ledger_balances(rows, gateway)
        found += self._i5_replays_identical(rows)
        found += self._i7_refunds_bounded(rows, gateway)
        found += self._i8_forward_only(rows)
        found += self._i10_tenant_isolation(rows, gateway)
        found += self._i11_recorded_first(rows, gateway)
        found += [Violation("contract", v) for v in self.records.violations]
        return sorted(set(found))

    def check_final(self) -> list[Violation]:
        """After faults stopped, recovery ran and every client asked once more."""
        rows = _Rows.load(self.db)
        gateway = self.load_gateway()
        found = self.check_safety()
        found += self._i2_everything_final(rows)
        found += self._i4_ledger_matches_gateway(rows, gateway)
        return sorted(set(found))

    # --- I1 --------------------------------------------------------------------------------------
    def _i1_one_payment_per_intent(self, rows: _Rows, gateway: GatewayView) -> list[Violation]:
        found: list[Violation] = []
        succeeded_by_command: dict[str, list[str]] = defaultdict(list)
        for payment in gateway.payments.values():
            if payment.status == "succeeded" and payment.command is not None:
                succeeded_by_command[payment.command].append(payment.id)
        for command, ids in sorted(succeeded_by_command.items()):
            if len(ids) > 1:
                found.append(Violation("I1", f"command {command} paid {len(ids)} times: {ids}"))
        # One live idempotency key, one command: a second command for the same key while the
        # first one's key is retained is a second intent the client never asked for.
        by_key: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
        for row in rows.commands:
            if row.idempotency_key is not None:
                by_key[(row.tenant_id, row.operation, row.idempotency_key)].append(row)
        for key, group in sorted(by_key.items()):
            group.sort(key=lambda r: (r.created_at_ms, r.id))
            for earlier, later in pairwise(group):
                expiry = earlier.key_expires_at_ms
                if expiry is None or later.created_at_ms < expiry:
                    found.append(
                        Violation("I1", f"key {key} has commands {earlier.id} and {later.id}")
                    )
            paid = sum(len(succeeded_by_command.get(r.id, [])) for r in group)
            if paid > 1 and len(group) > 1:
                found.append(Violation("I1", f"key {key} paid {paid} times"))
        succeeded_attempts: dict[tuple[str, str], int] = defaultdict(int)
        for attempt in rows.attempts:
            if attempt.status == "succeeded":
                succeeded_attempts[(attempt.tenant_id, attempt.charge_id)] += 1
        for charge, count in sorted(succeeded_attempts.items()):
            if count > 1:
                found.append(Violation("I1", f"charge {charge} has {count} succeeded attempts"))
        return found

    # --- I3 --------------------------------------------------------------------------------------
    def _i3_ledger_balances(self, rows: _Rows, gateway: GatewayView) -> list[Violation]:
        found: list[Violation] = []
        posted = {(e.tenant_id, e.id): e for e in rows.entries if e.state == "posted"}
        per_entry: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        per_tenant: dict[tuple[str, str], int] = defaultdict(int)
        per_account: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        posting_count: dict[tuple[str, str], int] = defaultdict(int)
        for p in rows.postings:
            entry_key = (p.tenant_id, p.entry_id)
            posting_count[entry_key] += 1
            if entry_key not in posted:
                continue
            amount = p.posted_amount_minor if p.posted_amount_minor is not None else p.amount_minor
            signed = amount if p.direction == "debit" else -amount
            per_entry[entry_key][p.currency] += signed
            per_tenant[(p.tenant_id, p.currency)] += signed
            per_account[(p.tenant_id, p.account_id)][0 if p.direction == "debit" else 1] += amount
        for key, totals in sorted(per_entry.items()):
            if any(totals.values()) or posting_count[key] < 2:
                found.append(Violation("I3", f"entry {key} does not balance: {dict(totals)}"))
        for key, total in sorted(per_tenant.items()):
            if total != 0:
                found.append(Violation("I3", f"tenant/currency {key}: debits - credits = {total}"))
        for account in rows.accounts:
            debits, credits = per_account[(account.tenant_id, account.id)]
            if (account.debits_posted, account.credits_posted) != (debits, credits):
                found.append(
                    Violation(
                        "I3",
                        f"account {account.code} cached {account.debits_posted}/"
                        f"{account.credits_posted}, postings say {debits}/{credits}",
                    )
                )
        found += self._ledger_within_gateway(rows, gateway, posted)
        return found

    def _ledger_within_gateway(
        self, rows: _Rows, gateway: GatewayView, posted: dict[tuple[str, str], Any]
    ) -> list[Violation]:
        """Every money movement the ledger shows happened at the gateway, for that tenant."""
        found: list[Violation] = []
        amounts: dict[tuple[str, str], tuple[int, str]] = {}
        for p in rows.postings:
            if p.direction == "debit":
                amounts[(p.tenant_id, p.entry_id)] = (p.amount_minor, p.currency)
        for (tenant_id, entry_id), entry in sorted(posted.items()):
            key = str(entry.entry_key)
            amount, currency = amounts.get((tenant_id, entry_id), (0, ""))
            if key.startswith("payment:") and key.endswith(":succeeded"):
                reference = key.removeprefix("payment:").removesuffix(":succeeded")
                pay = gateway.payments.get(reference)
                if pay is None or pay.status != "succeeded":
                    found.append(
                        Violation("I3", f"{key} posted but the gateway has no such payment")
                    )
                elif (pay.amount_minor, pay.currency, pay.tenant_id) != (
                    amount,
                    currency,
                    tenant_id,
                ):
                    found.append(
                        Violation(
                            "I3",
                            f"{key} posted {amount} {currency} for {tenant_id}, gateway: {pay}",
                        )
                    )
            elif key.startswith("refund:"):
                refund = gateway.refunds.get(key.removeprefix("refund:"))
                if refund is None or refund.status != "succeeded":
                    found.append(
                        Violation("I3", f"{key} posted but the gateway has no such refund")
                    )
                elif (refund.amount_minor, refund.currency, refund.tenant_id) != (
                    amount,
                    currency,
                    tenant_id,
                ):
                    found.append(
                        Violation("I3", f"{key} posted {amount} {currency}, gateway: {refund}")
                    )
        payment_entries: dict[tuple[str, str], int] = defaultdict(int)
        for entry in posted.values():
            if str(entry.entry_key).startswith("payment:") and entry.resource_id is not None:
                payment_entries[(entry.tenant_id, entry.resource_id)] += 1
        for charge in rows.charges:
            count = payment_entries.get((charge.tenant_id, charge.id), 0)
            expected = 1 if charge.status == "succeeded" else 0
            if count != expected:
                found.append(
                    Violation(
                        "I3", f"charge {charge.id} is {charge.status} with {count} payment entries"
                    )
                )
        return found

    # --- I5 --------------------------------------------------------------------------------------
    def _i5_replays_identical(self, rows: _Rows) -> list[Violation]:
        found: list[Violation] = []
        by_id = {(r.tenant_id, r.id): r for r in rows.commands}
        for intent in self.history.intents:
            first = intent.first_final()
            if intent.conflicts_with is not None:
                found += _conflict_refused(intent)
                continue
            if first is None:
                continue
            for later in intent.observations:
                if (
                    later.kind == "result"
                    and later.final
                    and (
                        (later.status, later.body_text, later.command_id)
                        != (first.status, first.body_text, first.command_id)
                    )
                ):
                    found.append(
                        Violation(
                            "I5",
                            f"intent {intent.number} ({intent.key}) answered {first.status} then "
                            f"{later.status} (command {first.command_id} / {later.command_id})",
                        )
                    )
            row = by_id.get((intent.tenant_id, first.command_id or ""))
            if row is not None and (row.response_status, row.response_body) != (
                first.status,
                first.body_text,
            ):
                found.append(
                    Violation("I5", f"command {row.id}: stored response differs from the one sent")
                )
            found += _answer_matches_request(intent, first.body())
        return found

    # --- I7 --------------------------------------------------------------------------------------
    def _i7_refunds_bounded(self, rows: _Rows, gateway: GatewayView) -> list[Violation]:
        found: list[Violation] = []
        held: dict[tuple[str, str], int] = defaultdict(int)
        succeeded: dict[tuple[str, str], int] = defaultdict(int)
        for refund in rows.refunds:
            key = (refund.tenant_id, refund.charge_id)
            if refund.status in _REFUND_HOLDING:
                held[key] += refund.amount_minor
            if refund.status == "succeeded":
                succeeded[key] += refund.amount_minor
        for learned in rows.gateway_refunds:
            if learned.status == "succeeded":
                succeeded[(learned.tenant_id, learned.charge_id)] += learned.amount_minor
        for charge in rows.charges:
            key = (charge.tenant_id, charge.id)
            if held[key] > charge.amount_minor:
                found.append(
                    Violation(
                        "I7",
                        f"charge {charge.id}: {held[key]} refunded or in flight > {charge.amount_minor}",
                    )
                )
            if charge.amount_refunded_minor != succeeded[key]:
                found.append(
                    Violation(
                        "I7",
                        f"charge {charge.id}: amount_refunded {charge.amount_refunded_minor} != {succeeded[key]}",
                    )
                )
        at_gateway: dict[str, int] = defaultdict(int)
        by_command: dict[str, list[str]] = defaultdict(list)
        for refund in gateway.refunds.values():
            if refund.status == "succeeded":
                at_gateway[refund.payment] += refund.amount_minor
                if refund.command is not None:
                    by_command[refund.command].append(refund.id)
        for command, made in sorted(by_command.items()):
            if len(made) > 1:  # one refund intent, refunded twice at the gateway
                found.append(
                    Violation("I7", f"refund command {command} refunded {len(made)} times: {made}")
                )
        for payment_id, total in sorted(at_gateway.items()):
            payment = gateway.payments.get(payment_id)
            if payment is None or total > payment.amount_minor:
                found.append(Violation("I7", f"gateway payment {payment_id} refunded {total}"))
        return found

    # --- I8 --------------------------------------------------------------------------------------
    def _i8_forward_only(self, rows: _Rows) -> list[Violation]:
        found: list[Violation] = []
        history: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for t in rows.transitions:
            history[(t.tenant_id, t.command_id)].append(t)
        for row in rows.commands:
            found += _check_history(row, history.get((row.tenant_id, row.id), []))
            key = (row.tenant_id, row.id)
            if row.state in _FINAL:
                snapshot = (row.state, row.response_status, row.response_body)
                before = self._seen_final_commands.setdefault(key, snapshot)
                if before != snapshot:
                    found.append(
                        Violation(
                            "I8", f"final command {row.id} changed: {before[0]} -> {row.state}"
                        )
                    )
            elif key in self._seen_final_commands:
                found.append(Violation("I8", f"command {row.id} left final state for {row.state}"))
        found += _monotonic(self._seen_charge_status, rows.charges, "charge", _CHARGE_FINAL)
        found += _monotonic(self._seen_refund_status, rows.refunds, "refund", _CHARGE_FINAL)
        return found

    # --- I10 -------------------------------------------------------------------------------------
    def _i10_tenant_isolation(self, rows: _Rows, gateway: GatewayView) -> list[Violation]:
        found = [Violation("I10", breach) for breach in self.history.isolation_breaches]
        customer_ids = {(c.tenant_id, c.id) for c in rows.customers}
        charge_ids = {(c.tenant_id, c.id) for c in rows.charges}
        account_ids = {(a.tenant_id, a.id) for a in rows.accounts}
        for charge in rows.charges:
            if (charge.tenant_id, charge.customer_id) not in customer_ids:
                found.append(
                    Violation("I10", f"charge {charge.id} bills a customer of another tenant")
                )
            payment = gateway.payments.get(charge.gateway_reference or "")
            if payment is not None and payment.tenant_id != charge.tenant_id:
                found.append(
                    Violation("I10", f"charge {charge.id} took {payment.tenant_id}'s payment")
                )
        for refund in rows.refunds:
            if (refund.tenant_id, refund.charge_id) not in charge_ids:
                found.append(
                    Violation("I10", f"refund {refund.id} refunds another tenant's charge")
                )
            made = gateway.refunds.get(refund.gateway_reference or "")
            if made is not None and made.tenant_id != refund.tenant_id:
                found.append(
                    Violation("I10", f"refund {refund.id} is {made.tenant_id}'s at the gateway")
                )
        for p in rows.postings:
            if (p.tenant_id, p.account_id) not in account_ids:
                found.append(
                    Violation("I10", f"posting of {p.entry_id} hits another tenant's account")
                )
        return found

    # --- I11 -------------------------------------------------------------------------------------
    def _i11_recorded_first(self, rows: _Rows, gateway: GatewayView) -> list[Violation]:
        found: list[Violation] = []
        by_id = {(r.tenant_id, r.id): r for r in rows.commands}
        for intent in self.history.intents:
            for obs in intent.observations:
                if obs.command_id is None:
                    continue
                row = by_id.get((intent.tenant_id, obs.command_id))
                if row is None or (row.operation, row.idempotency_key) != (
                    intent.operation,
                    intent.key,
                ):
                    found.append(
                        Violation(
                            "I11",
                            f"intent {intent.number} was told of command {obs.command_id}, not recorded as such",
                        )
                    )
        attempts = {(a.tenant_id, a.gateway_idempotency_key): a for a in rows.attempts}
        charge_commands = {(c.tenant_id, c.id): c.command_id for c in rows.charges}
        for payment_id, key in sorted(self.records.payment_keys.items()):
            payment = gateway.payments[payment_id]
            attempt = attempts.get((payment.tenant_id or "", key))
            if (
                attempt is None
                or charge_commands.get((attempt.tenant_id, attempt.charge_id)) != payment.command
            ):
                found.append(
                    Violation("I11", f"gateway payment {payment_id} has no recorded attempt {key}")
                )
        refund_keys = {(r.tenant_id, r.gateway_idempotency_key): r for r in rows.refunds}
        for refund_id, key in sorted(self.records.refund_keys.items()):
            made = gateway.refunds[refund_id]
            recorded = refund_keys.get((made.tenant_id or "", key))
            if recorded is None or recorded.command_id != made.command:
                found.append(
                    Violation("I11", f"gateway refund {refund_id} has no recorded refund {key}")
                )
        return found

    # --- liveness: I2 and I4 ---------------------------------------------------------------------
    def _i2_everything_final(self, rows: _Rows) -> list[Violation]:
        found = [
            Violation("I2", f"command {r.id} ({r.operation}) still {r.state} at {r.recovery_point}")
            for r in rows.commands
            if r.state not in _FINAL
        ]
        found += [
            Violation("I2", f"charge {c.id} still {c.status}")
            for c in rows.charges
            if c.status not in _CHARGE_FINAL
        ]
        found += [
            Violation("I2", f"refund {r.id} still {r.status}")
            for r in rows.refunds
            if r.status not in _CHARGE_FINAL
        ]
        for intent in self.history.intents:
            if not intent.settled:
                found.append(
                    Violation(
                        "I2", f"intent {intent.number} ({intent.key}) never got a final answer"
                    )
                )
        return found

    def _i4_ledger_matches_gateway(self, rows: _Rows, gateway: GatewayView) -> list[Violation]:
        """Rebuild, per currency, the part of the clearing account billkeep's own commands moved
        (payments and refunds it made) from the gateway's records, and compare. Money the
        gateway moved without a billkeep command (dashboard refunds, disputes, fees, outside
        payments) is the reconciliation extension's I4 check, which sees the whole account."""
        found: list[Violation] = []
        expected: dict[tuple[str, str], int] = defaultdict(int)
        for payment in gateway.payments.values():
            if payment.status == "succeeded" and payment.tenant_id and payment.command:
                expected[(payment.tenant_id, payment.currency)] += payment.amount_minor
        for refund in gateway.refunds.values():
            if refund.status == "succeeded" and refund.tenant_id and refund.command:
                expected[(refund.tenant_id, refund.currency)] -= refund.amount_minor
        clearing_accounts = {
            (a.tenant_id, a.id)
            for a in rows.accounts
            if str(a.code).startswith("gateway_clearing:")
        }
        posted = {
            (e.tenant_id, e.id)
            for e in rows.entries
            if e.state == "posted" and _commanded_fact(str(e.entry_key), gateway)
        }
        actual: dict[tuple[str, str], int] = defaultdict(int)
        for p in rows.postings:
            if (p.tenant_id, p.account_id) in clearing_accounts and (
                p.tenant_id,
                p.entry_id,
            ) in posted:
                actual[(p.tenant_id, p.currency)] += (
                    p.amount_minor if p.direction == "debit" else -p.amount_minor
                )
        for key in sorted(set(expected) | set(actual)):
            if expected[key] != actual[key]:
                found.append(
                    Violation(
                        "I4", f"clearing {key}: ledger {actual[key]}, gateway {expected[key]}"
                    )
                )
        by_reference = {(c.tenant_id, c.gateway_reference): c for c in rows.charges}
        for payment in gateway.payments.values():
            if payment.status != "succeeded" or not payment.tenant_id or not payment.command:
                continue
            charge = by_reference.get((payment.tenant_id, payment.id))
            if charge is None or charge.status != "succeeded":
                found.append(
                    Violation("I4", f"gateway payment {payment.id} is not a succeeded charge")
                )
        return found


def _commanded_fact(entry_key: str, gateway: GatewayView) -> bool:
    """A payment entry, or the entry of a refund billkeep's own command made."""
    if entry_key.startswith("payment:"):
        return True
    refund = gateway.refunds.get(entry_key.removeprefix("refund:"))
    return entry_key.startswith("refund:") and refund is not None and refund.command is not None


# --- helpers -------------------------------------------------------------------------------------
def _check_history(row: Any, transitions: list[Any]) -> list[Violation]:
    """Contiguous, along the state machine's edges, nothing after a final state, and every move
    made by the actor holding the latest lease (a fenced-out actor must not write)."""
    found: list[Violation] = []
    previous: str | None = None
    holder: str | None = None
    for expected_seq, t in enumerate(transitions, start=1):
        where = f"command {row.id} transition {t.seq}"
        if t.seq != expected_seq:
            found.append(Violation("I8", f"{where}: history has a gap"))
        if t.from_state != previous:
            found.append(Violation("I8", f"{where}: from {t.from_state}, was {previous}"))
        if previous is not None:
            if previous in _FINAL:
                found.append(Violation("I8", f"{where}: moved after final state {previous}"))
            try:
                check_transition(previous, t.to_state)
            except IllegalTransition as exc:
                found.append(Violation("I8", f"{where}: {exc}"))
        detail = t.detail or ""
        if previous is None:
            holder = None
        elif detail.startswith(_CLAIM_DETAILS):
            holder = t.actor
        elif t.actor != holder:
            found.append(
                Violation("I8", f"{where}: written by {t.actor} while {holder} holds the lease")
            )
        previous = t.to_state
    if transitions and previous != row.state:
        found.append(
            Violation("I8", f"command {row.id}: state {row.state}, history ends {previous}")
        )
    if not transitions:
        found.append(Violation("I8", f"command {row.id} has no history"))
    return found


def _monotonic(
    seen: dict[tuple[str, str], str], current: list[Any], what: str, finals: tuple[str, ...]
) -> list[Violation]:
    found: list[Violation] = []
    for row in current:
        key = (row.tenant_id, row.id)
        before = seen.get(key)
        if before in finals and row.status != before:
            found.append(Violation("I8", f"{what} {row.id} moved back: {before} -> {row.status}"))
        seen[key] = row.status
    return found


def _conflict_refused(intent: Intent) -> list[Violation]:
    return [
        Violation(
            "I5",
            f"intent {intent.number} reused key {intent.key} with another request and got {o.status}",
        )
        for o in intent.observations
        if o.kind == "result"
    ]


def _answer_matches_request(intent: Intent, body: Any) -> list[Violation]:
    """The answer is about this tenant's own request (a cross-tenant replay would not be)."""
    if not isinstance(body, dict) or "object" not in body:
        return []
    request = intent.request
    mismatched = False
    if body.get("object") == "charge":
        mismatched = (body.get("customer_id"), body.get("amount")) != (
            request["customer_id"],
            request["amount"],
        )
    elif body.get("object") == "refund":
        mismatched = body.get("charge_id") != request["charge_id"]
    if mismatched:
        return [
            Violation(
                "I10",
                f"intent {intent.number} ({intent.tenant_id}) got an answer for another request: {body}",
            )
        ]
    return []


def commands_final(state: str) -> bool:
    return CommandState(state) in FINAL_STATES
