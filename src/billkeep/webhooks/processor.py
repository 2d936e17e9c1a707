"""Processing inbox events: each event's facts are joined into the payment's monotonic state and
the local objects are moved forward to it, all in one transaction per event (exactly once per
event, whichever process gets there first).

Outcomes (stored on the event, see inbox.EventOutcome):
- applied: the event changed the state or a local object.
- duplicate: everything it says was known (e.g. `payment_intent.succeeded` after
  `charge.refunded`, which already implies the success).
- stale: it would move the payment backward (a failure after a success; a refund status lower
  than the known one): recorded, nothing changed (I8).
- conflict: it contradicts what is known (another amount); nothing changed; for a human.
- parked: billkeep does not know the payment yet (the charge command has not recorded the
  reference, or the payment was not made by billkeep). Retried on a backoff; once parked for
  `park_fetch_after_ms` the gateway is asked: a payment without metadata[billkeep_command] is
  `ignored` (reconciliation reports it as missing_in_ledger); after `park_give_up_ms`: failed.
- ignored: an event type billkeep does not consume, or a payment billkeep did not make.
- failed: a malformed event (the reason says what), or parked too long.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.clock import Clock
from billkeep.domain.errors import NotFound
from billkeep.domain.payment_state import (
    Outcome,
    PaymentStatus,
    PaymentSucceeded,
    RefundObserved,
    StripeEventFacts,
    StripeEventMalformed,
    apply,
    facts_from_stripe_event,
)
from billkeep.gateways.protocol import GatewayLookupFailed
from billkeep.storage.database import Database
from billkeep.storage.tables.reconciliation import webhook_events
from billkeep.webhooks import local
from billkeep.webhooks.fetch import GatewayObjects
from billkeep.webhooks.hints import EventHints, hints_from_event, with_fetched_object
from billkeep.webhooks.inbox import PENDING_OUTCOMES, EventOutcome
from billkeep.webhooks.limits import WebhookConfig
from billkeep.webhooks.metrics import WEBHOOKS_PROCESSED
from billkeep.webhooks.state_store import load_state, save_state

__all__ = ["WebhookProcessor"]

logger = logging.getLogger(__name__)
_PENDING = tuple(o.value for o in PENDING_OUTCOMES)
# Parked events of one payment released right after it became known (the rest wait their turn).
_MAX_RELEASED_PER_EVENT = 50


@dataclass(frozen=True)
class _Verdict:
    outcome: EventOutcome
    reason: str | None
    reference: str | None = None


class WebhookProcessor:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        config: WebhookConfig | None = None,
        objects: GatewayObjects | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config or WebhookConfig()
        self.objects = objects

    # -- entry points ------------------------------------------------------------------------
    def process_event(
        self, tenant_id: str, event_row_id: str, *, force: bool = False
    ) -> EventOutcome:
        """Process one inbox event (force: again, whatever its outcome; replay is safe because
        every effect is idempotent and monotonic)."""
        row = self.db.run_read(lambda conn: _load_event(conn, tenant_id, event_row_id))
        if row is None:
            raise NotFound(f"no webhook event {event_row_id}")
        if not force and row.outcome not in _PENDING:
            return EventOutcome(row.outcome)
        verdict = self._process(row, force)
        WEBHOOKS_PROCESSED.labels(verdict.outcome.value).inc()
        if verdict.outcome in (EventOutcome.APPLIED, EventOutcome.DUPLICATE) and verdict.reference:
            self._release_parked(tenant_id, verdict.reference, event_row_id)
        return verdict.outcome

    def process_due(self, limit: int | None = None) -> int:
        """Process events received or parked whose time has come (any tenant); returns how many."""
        batch = limit or self.config.batch_size
        now_ms = self.clock.now_ms()
        due = self.db.run_read(
            lambda conn: conn.execute(
                sa.select(webhook_events.c.tenant_id, webhook_events.c.id)
                .where(
                    webhook_events.c.outcome.in_(_PENDING),
                    webhook_events.c.next_attempt_at_ms <= now_ms,
                )
                .order_by(webhook_events.c.next_attempt_at_ms, webhook_events.c.id)
                .limit(batch)
            ).all()
        )
        for tenant_id, event_row_id in due:
            try:
                self.process_event(tenant_id, event_row_id)
            except Exception:  # one bad event must not stop the others; it stays due
                logger.exception("webhook event %s/%s failed to process", tenant_id, event_row_id)
        return len(due)

    def drain(self, max_passes: int = 1000) -> int:
        """Process until nothing is due now (parked events not yet due are left)."""
        total = 0
        for _ in range(max_passes):
            done = self.process_due()
            total += done
            if done == 0:
                break
        return total

    # -- one event ---------------------------------------------------------------------------
    def _process(self, row: Any, force: bool) -> _Verdict:
        try:
            event = json.loads(row.payload)
            facts = facts_from_stripe_event(event)
        except (StripeEventMalformed, ValueError) as exc:
            return self._finish(
                row, _Verdict(EventOutcome.FAILED, f"malformed event: {exc}"), force
            )
        if facts.ignored:
            verdict = _Verdict(EventOutcome.IGNORED, f"event type {facts.event_type} not tracked")
            return self._finish(row, verdict, force)
        hints = hints_from_event(event, facts)
        hints = self._maybe_fetch(row, hints)
        return self.db.run_write(lambda conn: self._apply(conn, row, facts, hints, force))

    def _maybe_fetch(self, row: Any, hints: EventHints) -> EventHints:
        """Long parked: ask the gateway (outside any transaction) what the event's object is."""
        if self.objects is None or row.parked_at_ms is None:
            return hints
        if self.clock.now_ms() - row.parked_at_ms < self.config.park_fetch_after_ms:
            return hints
        try:
            reference = hints.reference
            if reference is None and hints.charge_id is not None:
                reference = self.objects.charge_payment_intent(
                    row.tenant_id, row.gateway_id, hints.charge_id
                )
            if reference is None:
                return hints
            intent = self.objects.payment_intent(row.tenant_id, row.gateway_id, reference)
        except GatewayLookupFailed as exc:
            logger.info("lookup for parked event %s failed: %s", row.id, exc)
            return hints
        return with_fetched_object(hints, intent)

    def _apply(
        self, conn: Connection, row: Any, facts: StripeEventFacts, hints: EventHints, force: bool
    ) -> _Verdict:
        current = _load_event(conn, row.tenant_id, row.id, lock=True)
        assert current is not None
        if not force and current.outcome not in _PENDING:
            return _Verdict(EventOutcome(current.outcome), current.reason, current.reference)
        tenant_id, now_ms = row.tenant_id, self.clock.now_ms()
        charge = local.find_charge(conn, tenant_id, hints.reference, hints.command_ref)
        if charge is None or (hints.reference is None and charge.gateway_reference is None):
            if hints.foreign:
                reason = (
                    f"payment {hints.reference} was not made by billkeep (no "
                    "metadata[billkeep_command]); reconciliation reports it as missing_in_ledger"
                )
                return _store(
                    conn, current, _Verdict(EventOutcome.IGNORED, reason, hints.reference), now_ms
                )
            return self._park(conn, current, hints, "payment not known locally yet", now_ms)
        reference = hints.reference or charge.gateway_reference
        if charge.gateway_reference not in (None, reference):
            reason = (
                f"charge {charge.id} is paid by {charge.gateway_reference}; {reference} is another "
                "payment for the same command (reconciliation reports a duplicate)"
            )
            return _store(conn, current, _Verdict(EventOutcome.CONFLICT, reason, reference), now_ms)
        if _refund_may_be_in_flight(conn, tenant_id, charge, facts, hints):
            return self._park(
                conn, current, hints, "a billkeep refund of this charge is being recorded", now_ms
            )
        verdict = _join_and_sync(conn, current, charge, reference, facts, hints, now_ms)
        return _store(conn, current, verdict, now_ms)

    def _park(
        self, conn: Connection, row: Any, hints: EventHints, why: str, now_ms: int
    ) -> _Verdict:
        parked_at_ms = row.parked_at_ms if row.parked_at_ms is not None else now_ms
        if now_ms - parked_at_ms >= self.config.park_give_up_ms:
            verdict = _Verdict(
                EventOutcome.FAILED,
                f"{why}; gave up after {self.config.park_give_up_ms} ms parked",
                hints.reference,
            )
            return _store(conn, row, verdict, now_ms)
        attempts = row.attempts + 1
        conn.execute(
            webhook_events.update()
            .where(webhook_events.c.tenant_id == row.tenant_id, webhook_events.c.id == row.id)
            .values(
                outcome=EventOutcome.PARKED.value,
                reason=why,
                reference=hints.reference,
                attempts=attempts,
                parked_at_ms=parked_at_ms,
                next_attempt_at_ms=now_ms + self.config.retry_delay_ms(attempts),
                processed_at_ms=now_ms,
            )
        )
        return _Verdict(EventOutcome.PARKED, why, hints.reference)

    def _finish(self, row: Any, verdict: _Verdict, force: bool) -> _Verdict:
        def work(conn: Connection) -> _Verdict:
            current = _load_event(conn, row.tenant_id, row.id, lock=True)
            assert current is not None
            if not force and current.outcome not in _PENDING:
                return _Verdict(EventOutcome(current.outcome), current.reason, current.reference)
            return _store(conn, current, verdict, self.clock.now_ms())

        return self.db.run_write(work)

    def _release_parked(self, tenant_id: str, reference: str, except_id: str) -> None:
        parked = self.db.run_read(
            lambda conn: (
                conn.execute(
                    sa.select(webhook_events.c.id)
                    .where(
                        webhook_events.c.tenant_id == tenant_id,
                        webhook_events.c.reference == reference,
                        webhook_events.c.outcome == EventOutcome.PARKED.value,
                        webhook_events.c.id != except_id,
                    )
                    .order_by(webhook_events.c.id)
                    .limit(_MAX_RELEASED_PER_EVENT)
                )
                .scalars()
                .all()
            )
        )
        for event_row_id in parked:
            self._process_if_parked(tenant_id, event_row_id)

    def _process_if_parked(self, tenant_id: str, event_row_id: str) -> None:
        row = self.db.run_read(lambda conn: _load_event(conn, tenant_id, event_row_id))
        if row is not None and row.outcome == EventOutcome.PARKED.value:
            self._process(row, force=False)


def _load_event(conn: Connection, tenant_id: str, event_row_id: str, *, lock: bool = False) -> Any:
    query = sa.select(webhook_events).where(
        webhook_events.c.tenant_id == tenant_id, webhook_events.c.id == event_row_id
    )
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).first()


def _store(conn: Connection, row: Any, verdict: _Verdict, now_ms: int) -> _Verdict:
    conn.execute(
        webhook_events.update()
        .where(webhook_events.c.tenant_id == row.tenant_id, webhook_events.c.id == row.id)
        .values(
            outcome=verdict.outcome.value,
            reason=verdict.reason,
            reference=verdict.reference or row.reference,
            attempts=row.attempts + 1,
            next_attempt_at_ms=None,
            processed_at_ms=now_ms,
        )
    )
    return verdict


def _refund_may_be_in_flight(
    conn: Connection, tenant_id: str, charge: Any, facts: StripeEventFacts, hints: EventHints
) -> bool:
    """An unknown refund without a billkeep command, while a billkeep refund of this charge awaits
    its gateway answer, may be that refund: wait rather than record it as a dashboard refund."""
    reported = {f.refund_id for f in facts.facts if isinstance(f, RefundObserved)}
    unexplained = (
        reported - set(hints.refund_commands) - local.known_refund_ids(conn, tenant_id, charge.id)
    )
    return bool(unexplained) and local.has_unreferenced_refund_in_flight(conn, tenant_id, charge.id)


def _join_and_sync(
    conn: Connection,
    row: Any,
    charge: Any,
    reference: str,
    facts: StripeEventFacts,
    hints: EventHints,
    now_ms: int,
) -> _Verdict:
    state, exists = load_state(conn, row.tenant_id, row.gateway_id, reference)
    state = local.fold_local_knowledge(conn, row.tenant_id, charge, state)
    outcomes: list[tuple[Outcome, str]] = []
    for fact in facts.facts:
        if isinstance(fact, PaymentSucceeded) and fact.amount_received_minor != charge.amount_minor:
            outcomes.append(
                (
                    Outcome.CONFLICT,
                    f"gateway received {fact.amount_received_minor}, the charge is for "
                    f"{charge.amount_minor} {charge.currency}",
                )
            )
            continue
        step = apply(state, fact)
        outcomes.append((step.outcome, step.reason))
        state = step.state
    if state.status is PaymentStatus.SUCCEEDED and state.amount_received_minor is None:
        # A refund or dispute proves the payment succeeded; the amount is the charge's.
        state = apply(state, PaymentSucceeded(charge.amount_minor)).state
    changes = local.sync_local(
        conn, row.tenant_id, row.gateway_id, charge, state, hints.refund_commands, now_ms
    )
    save_state(conn, row.tenant_id, row.gateway_id, charge.id, state, exists=exists, now_ms=now_ms)
    return _aggregate(outcomes, changes, reference, facts.refunds_incomplete)


def _aggregate(
    outcomes: list[tuple[Outcome, str]], changes: list[str], reference: str, incomplete: bool
) -> _Verdict:
    kinds = {o for o, _ in outcomes}
    reasons = [r for o, r in outcomes if r and o is not Outcome.APPLIED]
    if incomplete:
        reasons.append("the event lists only some refunds; the refund events carry the rest")
    if Outcome.APPLIED in kinds or changes:
        outcome = EventOutcome.APPLIED
        reasons = changes + reasons
    elif Outcome.CONFLICT in kinds:
        outcome = EventOutcome.CONFLICT
    elif Outcome.STALE in kinds:
        outcome = EventOutcome.STALE
    else:
        outcome = EventOutcome.DUPLICATE
    return _Verdict(outcome, "; ".join(reasons) or None, reference)
