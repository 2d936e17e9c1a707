"""The reconciliation audit, decided from raw rows and the gateway's own store (never by the
matching code it checks).

After every step:
- every posted journal entry names one business fact of a known kind (`charge:{id}:sale`,
  `payment:{pi}:succeeded`, `refund:{re}`, `fee:{txn}`, `dispute:{dp}`), and no fact has two
  entries; each `fee:`/`dispute:` entry names a gateway balance transaction / dispute of that
  amount, currency and tenant, and a charge carries at most one fee entry (I3);
- no posted entry ever changes or disappears (a heal never rewrites money already recorded);
- every reconciliation run a client was told of is recorded, with its command (I11);
- a completed run reports each record once (a resumed run starts its window over instead of
  adding to what it found before), and a `duplicate` break names a command the gateway really
  paid more than once (I1's evidence, not an artefact of the run).

At the end (I4, "after reconciliation with healing, the ledger and the gateway agree"), per
tenant and currency: the clearing account = the gateway's succeeded payments made by billkeep
- every succeeded refund (billkeep's and dashboard ones) - disputes - the fees of billkeep's
payments; every break the final run left open is one the simulation's outside actors caused (a
payment made outside billkeep: `missing_in_ledger`), and each of those is reported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from billkeep.gateways.simulator import SimulatorCore
from billkeep.sim.auditor import Violation
from billkeep.sim.gateway import COMMAND_METADATA_KEY, TENANT_METADATA_KEY
from billkeep.sim.history import Intent
from billkeep.storage.database import Database
from billkeep.storage.tables.core import accounts, journal_entries, postings
from billkeep.storage.tables.reconciliation import reconciliation_breaks, reconciliation_runs

__all__ = ["FactKey", "GatewayFacts", "LedgerRows", "final_violations", "step_violations"]


@dataclass(frozen=True)
class GatewayFacts:
    """Money facts of the gateway's store, each attributed to a tenant (its account)."""

    # pi -> (tenant, command or None, amount, currency, status, charge id or None)
    payments: dict[str, tuple[str | None, str | None, int, str, str, str | None]]
    # re -> (tenant, amount, currency, status, pi)
    refunds: dict[str, tuple[str | None, int, str, str, str]]
    # dp -> (tenant, amount, currency, pi)
    disputes: dict[str, tuple[str | None, int, str, str]]
    # txn -> (tenant, fee, currency, charge id)
    fees: dict[str, tuple[str | None, int, str, str]]

    @classmethod
    def load(cls, core: SimulatorCore) -> GatewayFacts:
        with core.store.read() as tx:
            rows = tx.conn.execute(
                "SELECT kind, obj FROM objects WHERE kind IN ('payment_intent', 'charge',"
                " 'refund', 'dispute', 'balance_transaction') ORDER BY seq"
            ).fetchall()
        payments: dict[str, tuple[str | None, str | None, int, str, str, str | None]] = {}
        charge_tenant: dict[str, str | None] = {}
        refunds: dict[str, tuple[str | None, int, str, str, str]] = {}
        disputes: dict[str, tuple[str | None, int, str, str]] = {}
        txns: list[Any] = []
        for kind, raw in rows:
            obj = json.loads(raw)
            meta = obj.get("metadata") or {}
            if kind == "payment_intent":
                charge = obj.get("latest_charge")
                payments[obj["id"]] = (
                    meta.get(TENANT_METADATA_KEY),
                    meta.get(COMMAND_METADATA_KEY),
                    int(obj["amount"]),
                    str(obj["currency"]),
                    str(obj["status"]),
                    charge if isinstance(charge, str) else None,
                )
            elif kind == "charge":
                owner = payments.get(str(obj.get("payment_intent")))
                charge_tenant[obj["id"]] = owner[0] if owner else None
            elif kind == "refund":
                refunds[obj["id"]] = (
                    meta.get(TENANT_METADATA_KEY),
                    int(obj["amount"]),
                    str(obj["currency"]),
                    str(obj["status"]),
                    str(obj["payment_intent"]),
                )
            elif kind == "dispute":
                disputes[obj["id"]] = (
                    charge_tenant.get(str(obj.get("charge"))),
                    int(obj["amount"]),
                    str(obj["currency"]),
                    str(obj["payment_intent"]),
                )
            else:
                txns.append(obj)
        fees = {
            str(t["id"]): (
                charge_tenant.get(str(t["source"])),
                int(t.get("fee") or 0),
                str(t["currency"]),
                str(t["source"]),
            )
            for t in txns
            if t.get("type") == "charge"
        }
        return cls(payments, refunds, disputes, fees)


@dataclass(frozen=True)
class LedgerRows:
    # (tenant, entry id) -> (entry key, resource id), posted entries only
    entries: dict[tuple[str, str], tuple[str, str | None]]
    # (tenant, entry id) -> [(account code, direction, amount, currency)]
    postings: dict[tuple[str, str], list[tuple[str, str, int, str]]]
    runs: dict[tuple[str, str], Any]
    breaks: list[Any]

    @classmethod
    def load(cls, db: Database) -> LedgerRows:
        with db.read() as conn:
            entry_rows = conn.execute(
                sa.select(
                    journal_entries.c.tenant_id,
                    journal_entries.c.id,
                    journal_entries.c.entry_key,
                    journal_entries.c.resource_id,
                ).where(journal_entries.c.state == "posted")
            ).all()
            posting_rows = conn.execute(
                sa.select(
                    postings.c.tenant_id,
                    postings.c.entry_id,
                    accounts.c.code,
                    postings.c.direction,
                    postings.c.amount_minor,
                    postings.c.currency,
                ).join(
                    accounts,
                    sa.and_(
                        accounts.c.tenant_id == postings.c.tenant_id,
                        accounts.c.id == postings.c.account_id,
                    ),
                )
            ).all()
            runs = conn.execute(sa.select(reconciliation_runs)).all()
            breaks = list(
                conn.execute(
                    sa.select(reconciliation_breaks).order_by(
                        reconciliation_breaks.c.tenant_id, reconciliation_breaks.c.id
                    )
                ).all()
            )
        entries = {(t, i): (str(k), r) for t, i, k, r in entry_rows}
        by_entry: dict[tuple[str, str], list[tuple[str, str, int, str]]] = defaultdict(list)
        for tenant, entry_id, code, direction, amount, currency in posting_rows:
            if (tenant, entry_id) in entries:
                by_entry[(tenant, entry_id)].append((str(code), direction, amount, currency))
        return cls(entries, dict(by_entry), {(r.tenant_id, r.id): r for r in runs}, breaks)

    def debit_of(self, entry: tuple[str, str]) -> tuple[int, str]:
        for _code, direction, amount, currency in self.postings.get(entry, []):
            if direction == "debit":
                return amount, currency
        return 0, ""


@dataclass(frozen=True, order=True)
class FactKey:
    kind: str  # sale, payment, invoice, refund, fee, dispute
    fact: str  # the object the entry is about


def fact_of(entry_key: str) -> FactKey | None:
    """The business fact an entry key names, or None for a key of no known shape."""
    parts = entry_key.split(":")
    if len(parts) == 3 and parts[0] == "charge" and parts[2] == "sale":
        return FactKey("sale", parts[1])
    if len(parts) == 3 and parts[0] == "payment" and parts[2] == "succeeded":
        return FactKey("payment", parts[1])
    if len(parts) == 3 and parts[0] == "invoice" and parts[2] == "issued":
        return FactKey("invoice", parts[1])  # billing: the receivable an issued invoice creates
    if len(parts) == 2 and parts[0] in ("refund", "fee", "dispute"):
        return FactKey(parts[0], parts[1])
    return None


def step_violations(
    ledger: LedgerRows,
    gateway: GatewayFacts,
    seen_entries: dict[tuple[str, str], tuple[str, tuple[tuple[str, str, int, str], ...]]],
    intents: list[Intent],
) -> list[Violation]:
    found: list[Violation] = []
    per_fact: dict[tuple[str, FactKey], list[str]] = defaultdict(list)
    fees_per_charge: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (tenant, entry_id), (key, resource) in sorted(ledger.entries.items()):
        fact = fact_of(key)
        if fact is None:
            found.append(Violation("I3", f"entry {key} ({tenant}) names no business fact"))
            continue
        per_fact[(tenant, fact)].append(key)
        amount, currency = ledger.debit_of((tenant, entry_id))
        if fact.kind == "fee":
            fees_per_charge[(tenant, resource or "")].append(key)
            fee = gateway.fees.get(fact.fact)
            if fee is None or (fee[0], fee[1], fee[2]) != (tenant, amount, currency):
                found.append(
                    Violation("I3", f"{key} posted {amount} {currency} for {tenant}, gateway {fee}")
                )
        elif fact.kind == "dispute":
            dispute = gateway.disputes.get(fact.fact)
            if dispute is None or dispute[:3] != (tenant, amount, currency):
                found.append(
                    Violation(
                        "I3", f"{key} posted {amount} {currency} for {tenant}, gateway {dispute}"
                    )
                )
    for (tenant, fact), keys in sorted(per_fact.items()):
        if len(keys) > 1:
            found.append(Violation("I3", f"{tenant}: fact {fact} posted {len(keys)} times: {keys}"))
    for (tenant, resource), keys in sorted(fees_per_charge.items()):
        if len(keys) > 1:
            found.append(Violation("I3", f"{tenant}: charge {resource} has fee entries {keys}"))
    # Posted money never changes afterwards (a heal moves things forward, never rewrites).
    current = {
        entry: (key, tuple(sorted(ledger.postings.get(entry, []))))
        for entry, (key, _resource) in ledger.entries.items()
    }
    for entry, before in sorted(seen_entries.items()):
        if current.get(entry) != before:
            found.append(Violation("I3", f"entry {before[0]} of {entry[0]} changed or vanished"))
    seen_entries.update(current)
    found += _run_reports(ledger, gateway)
    # A run a client was told of exists, for that command (recorded before acknowledged).
    for intent in intents:
        for obs in intent.observations:
            body = obs.body()
            if obs.kind != "result" or not isinstance(body, dict) or "id" not in body:
                continue
            run = ledger.runs.get((intent.tenant_id, str(body["id"])))
            if run is None or run.command_id != obs.command_id or run.status != "completed":
                found.append(
                    Violation("I11", f"intent {intent.number} told of run {body['id']}: {run}")
                )
    return found


def _run_reports(ledger: LedgerRows, gateway: GatewayFacts) -> list[Violation]:
    found: list[Violation] = []
    reported: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
    for row in ledger.breaks:
        run = ledger.runs.get((row.tenant_id, row.run_id))
        if run is None or run.status != "completed":
            continue  # a run still going (or to be resumed) may be half written
        record = (row.gateway_reference or "", row.resource_id or "", str(row.expected))
        reported[(row.tenant_id, row.run_id, *record)] += 1
        if row.type == "duplicate":
            paid = [
                pi
                for pi, (owner, command, _a, _c, status, _ch) in gateway.payments.items()
                if owner == row.tenant_id and command == row.match_key and status == "succeeded"
            ]
            if len(paid) < 2:
                found.append(
                    Violation(
                        "I4",
                        f"run {row.run_id} reports {row.gateway_reference} as a duplicate payment"
                        f" of {row.match_key}; the gateway has {paid}",
                    )
                )
    for (tenant, run_id, reference, resource, _expected), count in sorted(reported.items()):
        if count > 1:
            found.append(
                Violation(
                    "I4",
                    f"{tenant}: run {run_id} reports {reference or resource} {count} times",
                )
            )
    return found


def expected_clearing(gateway: GatewayFacts, tenant: str) -> dict[str, int]:
    """What the tenant's clearing account must hold per currency, from the gateway alone."""
    expected: dict[str, int] = defaultdict(int)
    billkeep_payments: set[str] = set()
    billkeep_charges: set[str] = set()
    for pi, (owner, command, amount, currency, status, charge) in gateway.payments.items():
        if owner == tenant and command is not None and status == "succeeded":
            expected[currency] += amount
            billkeep_payments.add(pi)
            if charge is not None:
                billkeep_charges.add(charge)
    # Money out of billkeep's payments only: an outside payment never entered the ledger.
    for owner, amount, currency, status, pi in gateway.refunds.values():
        if owner == tenant and status == "succeeded" and pi in billkeep_payments:
            expected[currency] -= amount
    for owner, amount, currency, pi in gateway.disputes.values():
        if owner == tenant and pi in billkeep_payments:
            expected[currency] -= amount
    for owner, fee, currency, charge in gateway.fees.values():
        if owner == tenant and charge in billkeep_charges:
            expected[currency] -= fee
    return expected


def ledger_clearing(ledger: LedgerRows, tenant: str) -> dict[str, int]:
    actual: dict[str, int] = defaultdict(int)
    for (owner, _entry), lines in ledger.postings.items():
        if owner != tenant:
            continue
        for code, direction, amount, currency in lines:
            if code.startswith("gateway_clearing:"):
                actual[currency] += amount if direction == "debit" else -amount
    return actual


def final_violations(
    ledger: LedgerRows,
    gateway: GatewayFacts,
    final_runs: dict[str, str],
) -> list[Violation]:
    """`final_runs`: tenant -> id of its final run (whole window, healing, faults off)."""
    found: list[Violation] = []
    for tenant, run_id in sorted(final_runs.items()):
        expected, actual = expected_clearing(gateway, tenant), ledger_clearing(ledger, tenant)
        for currency in sorted(set(expected) | set(actual)):
            if expected[currency] != actual[currency]:
                found.append(
                    Violation(
                        "I4",
                        f"{tenant} clearing {currency}: ledger {actual[currency]}, gateway "
                        f"{expected[currency]} (payments - refunds - disputes - fees)",
                    )
                )
        # Outside payments of this tenant's account: each one must be reported, open.
        outside = {
            pi
            for pi, (owner, command, _a, _c, status, _ch) in gateway.payments.items()
            if owner == tenant and command is None and status == "succeeded"
        }
        open_breaks: dict[str, list[str]] = defaultdict(list)
        for row in ledger.breaks:
            if row.tenant_id == tenant and row.run_id == run_id and not row.healed:
                open_breaks[row.gateway_reference or row.match_key].append(str(row.type))
        for reference, kinds in sorted(open_breaks.items()):
            if reference not in outside or kinds != ["missing_in_ledger"]:
                found.append(
                    Violation("I4", f"{tenant}: final run left {kinds} open for {reference}")
                )
        for reference in sorted(outside - set(open_breaks)):
            found.append(
                Violation("I4", f"{tenant}: outside payment {reference} not reported by the run")
            )
        run = ledger.runs.get((tenant, run_id))
        if run is None or run.status != "completed":
            found.append(Violation("I2", f"{tenant}: final reconciliation {run_id} not completed"))
    return found
