"""The webhook part of the independent audit: I3, I8, I10 and I11 as webhooks make them matter.

Decided from raw rows (`webhook_events`, `payment_states`, `charges`, `refunds`,
`journal_entries`), the delivery network's own record of what it saw acknowledged, and the
gateway's store; never by calling the webhook code being checked. The payment-state order below is
restated from spec/invariants.md (I8) and domain/payment_state.py's documentation, not imported.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from billkeep.sim.auditor import Violation
from billkeep.sim.extensions.webhook_gateway import GatewayTruth
from billkeep.storage.database import Database
from billkeep.storage.tables.core import charges, journal_entries, refunds
from billkeep.storage.tables.reconciliation import payment_states, webhook_events

__all__ = ["TRACKED_EVENT_TYPES", "WebhookAudit", "expected_payment_status"]

# pending < processing < failed < succeeded (a success supersedes a failed attempt; never back).
PAYMENT_RANK = {"pending": 0, "processing": 1, "failed": 2, "succeeded": 3}
# pending < canceled < failed < succeeded: a lower report about a refund is stale.
REFUND_RANK = {"pending": 0, "canceled": 1, "failed": 2, "succeeded": 3}
PENDING_OUTCOMES = ("received", "parked")
# What an event about a billkeep payment may end as: it taught something, nothing new, or less.
SETTLED_OUTCOMES = ("applied", "duplicate", "stale")
# Event types billkeep consumes (spec/gateway-simulator.md lists what the gateway emits); the
# others may end `ignored`.
TRACKED_EVENT_TYPES = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.processing",
        "charge.refunded",
        "refund.created",
        "refund.updated",
        "charge.dispute.created",
    }
)


@dataclass(frozen=True)
class _StateSnapshot:
    status: str
    amount_received: int | None
    refunds: dict[str, tuple[int, str]]  # refund id -> (amount, status)
    disputes: frozenset[tuple[str, int]]

    @property
    def amount_refunded(self) -> int:
        return sum(a for a, s in self.refunds.values() if s == "succeeded")

    @classmethod
    def parse(cls, text: str) -> _StateSnapshot:
        doc: dict[str, Any] = json.loads(text)
        return cls(
            str(doc["status"]),
            doc.get("amount_received_minor"),
            {str(i): (int(a), str(s)) for i, a, s in doc.get("refunds", [])},
            frozenset((str(i), int(a)) for i, a in doc.get("disputes", [])),
        )


@dataclass
class _Implied:
    status: str = "pending"
    refunds: dict[str, str] = field(default_factory=dict)

    def raise_to(self, status: str, refunds: Mapping[str, str]) -> None:
        if PAYMENT_RANK[status] > PAYMENT_RANK[self.status]:
            self.status = status
        for refund_id, refund_status in refunds.items():
            known = self.refunds.get(refund_id, "pending")
            if REFUND_RANK[refund_status] >= REFUND_RANK[known]:
                self.refunds[refund_id] = refund_status


# Stripe's refund statuses as the payment state ranks them (requires_action: nothing moved yet).
_REFUND_STATUS = {"requires_action": "pending"}
_INTENT_EVENT_STATUS = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "payment_intent.processing": "processing",
}


def _implied_by(
    event_type: str, event: Mapping[str, Any]
) -> tuple[str, str, dict[str, str]] | None:
    """(payment intent, the status the event proves at least, refund id -> status) for a tracked
    event; None for others. A refund or a dispute exists only for a succeeded payment."""
    obj = (event.get("data") or {}).get("object") or {}
    if event_type in _INTENT_EVENT_STATUS:
        return str(obj["id"]), _INTENT_EVENT_STATUS[event_type], {}
    reference = obj.get("payment_intent")
    if not isinstance(reference, str):
        return None
    if event_type in ("refund.created", "refund.updated"):
        status = str(obj["status"])
        return reference, "succeeded", {str(obj["id"]): _REFUND_STATUS.get(status, status)}
    if event_type == "charge.refunded":
        listed = (obj.get("refunds") or {}).get("data") or []
        return (
            reference,
            "succeeded",
            {str(r["id"]): _REFUND_STATUS.get(str(r["status"]), str(r["status"])) for r in listed},
        )
    if event_type == "charge.dispute.created":
        return reference, "succeeded", {}
    return None


def expected_payment_status(intent: Mapping[str, Any]) -> str:
    """The payment-state status a gateway payment intent stands for."""
    status = intent.get("status")
    if status == "succeeded":
        return "succeeded"
    if status == "processing":
        return "processing"
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return "failed"
    return "pending"


def _posted_entry_keys(conn: sa.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        sa.select(journal_entries.c.tenant_id, journal_entries.c.entry_key).where(
            journal_entries.c.state == "posted"
        )
    ).all()
    return [(str(t), str(k)) for t, k in rows]


class WebhookAudit:
    """Keeps what it saw last, to check that nothing webhooks touch moves backward (I8)."""

    def __init__(self, db: Database, gateway_id: str) -> None:
        self.db = db
        self.gateway_id = gateway_id
        self._states: dict[tuple[str, str, str], _StateSnapshot] = {}
        self._outcomes: dict[tuple[str, str], str] = {}
        self._charges: dict[tuple[str, str], tuple[str, int]] = {}
        self._refunds: dict[tuple[str, str], str] = {}
        # What events already processed (applied/duplicate/stale) reported, per payment: the
        # stored state is the join of every processed fact, so it must know at least this.
        self._implied: dict[tuple[str, str], _Implied] = {}

    # --- after every step -------------------------------------------------------------------
    def check_safety(
        self, acknowledged: set[tuple[str, str]], delivered_to: Mapping[str, str]
    ) -> list[Violation]:
        """`acknowledged`: (tenant, event id) the network saw answered 2xx; `delivered_to`: the
        tenant each event id was delivered to."""
        with self.db.read() as conn:
            events = conn.execute(
                sa.select(
                    webhook_events.c.tenant_id,
                    webhook_events.c.id,
                    webhook_events.c.gateway_id,
                    webhook_events.c.event_id,
                    webhook_events.c.outcome,
                )
            ).all()
            states = conn.execute(
                sa.select(
                    payment_states.c.tenant_id,
                    payment_states.c.gateway_id,
                    payment_states.c.reference,
                    payment_states.c.status,
                    payment_states.c.state,
                )
            ).all()
            charge_rows = conn.execute(
                sa.select(
                    charges.c.tenant_id,
                    charges.c.id,
                    charges.c.status,
                    charges.c.amount_refunded_minor,
                )
            ).all()
            refund_rows = conn.execute(
                sa.select(refunds.c.tenant_id, refunds.c.id, refunds.c.status)
            ).all()
            entry_keys = _posted_entry_keys(conn)
        found = self._i11_stored_before_acknowledged(events, acknowledged, delivered_to)
        newly_settled = self._i8_events_final(events, found)
        self._learn_implied(newly_settled)
        found += self._i8_states_forward(states)
        found += self._i8_states_know_processed_facts(states)
        found += self._i8_local_forward(charge_rows, refund_rows)
        found += _i3_one_entry_per_fact(entry_keys)
        return found

    def _i11_stored_before_acknowledged(
        self,
        events: Sequence[Any],
        acknowledged: set[tuple[str, str]],
        delivered_to: Mapping[str, str],
    ) -> list[Violation]:
        found: list[Violation] = []
        copies = Counter((e.tenant_id, e.gateway_id, e.event_id) for e in events)
        for key, count in sorted(copies.items()):
            if count > 1:
                found.append(Violation("I11", f"webhook event {key} stored {count} times"))
        stored = {(e.tenant_id, e.event_id) for e in events if e.gateway_id == self.gateway_id}
        for _tenant_id, event_id in sorted(acknowledged - stored):
            found.append(
                Violation("I11", f"event {event_id} acknowledged to the gateway, not stored")
            )
        for event in events:
            owner = delivered_to.get(event.event_id)
            if owner != event.tenant_id:
                found.append(
                    Violation(
                        "I10",
                        f"event {event.event_id} stored for {event.tenant_id}, "
                        f"delivered to {owner}",
                    )
                )
        return found

    def _i8_events_final(self, events: Sequence[Any], found: list[Violation]) -> list[Any]:
        """An event's final outcome is never revised (nothing here replays with force). Returns
        the events that reached a settled outcome since the last audit."""
        newly: list[Any] = []
        for event in events:
            key = (event.tenant_id, event.id)
            before = self._outcomes.get(key)
            if before is not None and before not in PENDING_OUTCOMES and event.outcome != before:
                found.append(
                    Violation("I8", f"event {event.event_id} outcome {before} -> {event.outcome}")
                )
            if event.outcome in SETTLED_OUTCOMES and before not in SETTLED_OUTCOMES:
                newly.append(event)
            self._outcomes[key] = event.outcome
        return newly

    def _learn_implied(self, settled: Sequence[Any]) -> None:
        if not settled:
            return
        ids = [(e.tenant_id, e.id) for e in settled]
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(
                    webhook_events.c.tenant_id,
                    webhook_events.c.event_type,
                    webhook_events.c.payload,
                ).where(sa.tuple_(webhook_events.c.tenant_id, webhook_events.c.id).in_(ids))
            ).all()
        for tenant_id, event_type, payload in rows:
            implied = _implied_by(str(event_type), json.loads(payload))
            if implied is None:
                continue
            reference, status, refund_facts = implied
            known = self._implied.setdefault((tenant_id, reference), _Implied())
            known.raise_to(status, refund_facts)

    def _i8_states_know_processed_facts(self, states: Sequence[Any]) -> list[Violation]:
        found: list[Violation] = []
        by_key = {(s.tenant_id, s.reference): s for s in states}
        for (tenant_id, reference), implied in sorted(self._implied.items()):
            row = by_key.get((tenant_id, reference))
            where = f"payment state {reference}"
            if row is None:
                found.append(Violation("I8", f"{where}: events were processed, no state stored"))
                continue
            state = _StateSnapshot.parse(row.state)
            if PAYMENT_RANK[state.status] < PAYMENT_RANK[implied.status]:
                found.append(
                    Violation(
                        "I8",
                        f"{where} is {state.status}; a processed event reported {implied.status}",
                    )
                )
            for refund_id, status in sorted(implied.refunds.items()):
                known = state.refunds.get(refund_id)
                if known is None or REFUND_RANK[known[1]] < REFUND_RANK[status]:
                    found.append(
                        Violation(
                            "I8", f"{where}: refund {refund_id} is {known}; an event said {status}"
                        )
                    )
        return found

    def _i8_states_forward(self, states: Sequence[Any]) -> list[Violation]:
        found: list[Violation] = []
        for row in states:
            key = (row.tenant_id, row.gateway_id, row.reference)
            now = _StateSnapshot.parse(row.state)
            where = f"payment state {row.reference}"
            if now.status != row.status:
                found.append(Violation("I8", f"{where}: column {row.status}, state {now.status}"))
            before = self._states.get(key)
            self._states[key] = now
            if before is None:
                continue
            if PAYMENT_RANK[now.status] < PAYMENT_RANK[before.status]:
                found.append(
                    Violation("I8", f"{where} moved back: {before.status} -> {now.status}")
                )
            if before.amount_received is not None and now.amount_received != before.amount_received:
                found.append(
                    Violation(
                        "I8",
                        f"{where}: amount received {before.amount_received} -> "
                        f"{now.amount_received}",
                    )
                )
            if now.amount_refunded < before.amount_refunded:
                found.append(
                    Violation(
                        "I8",
                        f"{where}: amount refunded {before.amount_refunded} -> "
                        f"{now.amount_refunded}",
                    )
                )
            for refund_id, (amount, status) in sorted(before.refunds.items()):
                later = now.refunds.get(refund_id)
                if (
                    later is None
                    or later[0] != amount
                    or REFUND_RANK[later[1]] < REFUND_RANK[status]
                ):
                    found.append(
                        Violation("I8", f"{where}: refund {refund_id} {status} -> {later}")
                    )
            if not before.disputes <= now.disputes:
                found.append(Violation("I8", f"{where}: a dispute disappeared"))
        return found

    def _i8_local_forward(
        self, charge_rows: Sequence[Any], refund_rows: Sequence[Any]
    ) -> list[Violation]:
        found: list[Violation] = []
        for row in charge_rows:
            key = (row.tenant_id, row.id)
            before = self._charges.get(key)
            self._charges[key] = (row.status, row.amount_refunded_minor)
            if before is None:
                continue
            if before[0] == "succeeded" and row.status != "succeeded":
                found.append(
                    Violation("I8", f"charge {row.id} moved back: succeeded -> {row.status}")
                )
            if row.amount_refunded_minor < before[1]:
                found.append(
                    Violation(
                        "I8",
                        f"charge {row.id}: amount refunded {before[1]} -> {row.amount_refunded_minor}",
                    )
                )
        for row in refund_rows:
            key = (row.tenant_id, row.id)
            before_status = self._refunds.get(key)
            self._refunds[key] = row.status
            if before_status == "succeeded" and row.status != "succeeded":
                found.append(
                    Violation("I8", f"refund {row.id} moved back: succeeded -> {row.status}")
                )
        return found

    # --- once, at the end -------------------------------------------------------------------
    def check_final(
        self, truth: GatewayTruth, undelivered: int
    ) -> tuple[list[Violation], Counter[str]]:
        """Everything delivered was processed to an end that agrees with the gateway. Returns the
        violations and the count of events per final outcome (for the run's stats)."""
        with self.db.read() as conn:
            events = conn.execute(
                sa.select(
                    webhook_events.c.tenant_id,
                    webhook_events.c.event_id,
                    webhook_events.c.event_type,
                    webhook_events.c.payload,
                    webhook_events.c.outcome,
                    webhook_events.c.reason,
                )
            ).all()
            states = conn.execute(
                sa.select(
                    payment_states.c.tenant_id,
                    payment_states.c.reference,
                    payment_states.c.state,
                )
            ).all()
            charge_rows = conn.execute(sa.select(charges)).all()
            refund_rows = conn.execute(sa.select(refunds)).all()
        found: list[Violation] = []
        if undelivered:
            found.append(Violation("I2", f"{undelivered} webhook deliveries never acknowledged"))
        outcomes: Counter[str] = Counter(str(e.outcome) for e in events)
        for event in events:
            found += _event_ended_well(event, truth)
        found += _charges_agree(charge_rows, truth)
        found += _refunds_agree(refund_rows, truth)
        found += _states_agree(states, charge_rows, truth)
        return found, outcomes


def _i3_one_entry_per_fact(entry_keys: list[tuple[str, str]]) -> list[Violation]:
    """A fact learned from the API answer and from webhooks is posted once: one entry per key, and
    one payment (refund) entry per gateway payment (refund), whatever else the key says."""
    found: list[Violation] = []
    for pair, count in sorted(Counter(entry_keys).items()):
        if count > 1:
            found.append(Violation("I3", f"entry {pair} posted {count} times"))
    per_object: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for tenant_id, key in entry_keys:
        kind, _, rest = key.partition(":")
        if kind in ("payment", "refund") and rest:
            per_object[(tenant_id, kind, rest.split(":", 1)[0])].append(key)
    for (tenant_id, kind, object_id), keys in sorted(per_object.items()):
        if len(keys) > 1:
            found.append(
                Violation(
                    "I3", f"{kind} {object_id} of {tenant_id} posted {len(keys)} times: {keys}"
                )
            )
    return found


def _event_ended_well(event: Any, truth: GatewayTruth) -> list[Violation]:
    where = f"event {event.event_id} ({event.event_type}) for {event.tenant_id}"
    if event.outcome in PENDING_OUTCOMES:
        return [Violation("I2", f"{where} still {event.outcome}: {event.reason}")]
    payload = json.loads(event.payload)
    obj = (payload.get("data") or {}).get("object") or {}
    intent_id = (
        obj.get("id") if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    )
    if not truth.is_billkeep_payment(intent_id if isinstance(intent_id, str) else None):
        # Not billkeep's payment: ignored (by type or as foreign) is the only right end.
        if event.outcome != "ignored":
            return [
                Violation("I8", f"{where} about a payment billkeep did not make: {event.outcome}")
            ]
        return []
    if event.event_type not in TRACKED_EVENT_TYPES:
        return [] if event.outcome == "ignored" else [Violation("I8", f"{where}: {event.outcome}")]
    if event.outcome not in SETTLED_OUTCOMES:
        return [Violation("I8", f"{where} ended {event.outcome}: {event.reason}")]
    return []


def _charges_agree(charge_rows: Sequence[Any], truth: GatewayTruth) -> list[Violation]:
    found: list[Violation] = []
    for charge in charge_rows:
        intent = truth.intents.get(charge.gateway_reference or "")
        if intent is None:
            continue
        expected = expected_payment_status(intent)
        if expected in ("succeeded", "failed") and charge.status != expected:
            found.append(
                Violation("I4", f"charge {charge.id} is {charge.status}, gateway says {expected}")
            )
        refunded = sum(
            int(r["amount"])
            for r in truth.refunds_of(str(intent["id"]))
            if r["status"] == "succeeded"
        )
        if charge.amount_refunded_minor != refunded:
            found.append(
                Violation(
                    "I4",
                    f"charge {charge.id} refunded {charge.amount_refunded_minor}, gateway {refunded}",
                )
            )
    return found


def _refunds_agree(refund_rows: Sequence[Any], truth: GatewayTruth) -> list[Violation]:
    found: list[Violation] = []
    for refund in refund_rows:
        made = truth.refunds.get(refund.gateway_reference or "")
        if made is None:
            continue
        if (refund.status, refund.amount_minor) != (made["status"], int(made["amount"])):
            found.append(
                Violation(
                    "I4",
                    f"refund {refund.id} is {refund.status} {refund.amount_minor}, gateway "
                    f"{made['status']} {made['amount']}",
                )
            )
    return found


def _states_agree(
    states: Sequence[Any], charge_rows: Sequence[Any], truth: GatewayTruth
) -> list[Violation]:
    """Each billkeep payment's stored state says what the gateway's objects say."""
    found: list[Violation] = []
    by_reference = {(s.tenant_id, s.reference): s for s in states}
    for charge in charge_rows:
        intent = truth.intents.get(charge.gateway_reference or "")
        if intent is None:
            continue
        row = by_reference.get((charge.tenant_id, str(intent["id"])))
        where = f"payment state {intent['id']}"
        if row is None:
            found.append(Violation("I4", f"{where}: none stored though its events were delivered"))
            continue
        state = _StateSnapshot.parse(row.state)
        expected = expected_payment_status(intent)
        received = intent.get("amount_received") if expected == "succeeded" else None
        refunds_now = {
            str(r["id"]): (int(r["amount"]), str(r["status"]))
            for r in truth.refunds_of(str(intent["id"]))
        }
        disputes_now = frozenset(
            (str(d["id"]), int(d["amount"])) for d in truth.disputes_of(str(intent["id"]))
        )
        actual = (state.status, state.amount_received, state.refunds, state.disputes)
        wanted = (expected, received or None, refunds_now, disputes_now)
        if actual != wanted:
            found.append(Violation("I4", f"{where} is {actual}, the gateway says {wanted}"))
    return found
